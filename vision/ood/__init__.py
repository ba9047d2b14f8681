"""Out-of-distribution detection: ConjNorm (ICLR 2024) and its comparison with pytorch-ood's detectors.

`conjnorm.ConjNorm` follows pytorch-ood's detector shape (``fit_features``/``predict_features``
return outlier scores, higher = more OOD); `benchmark` trains a small classifier on offline
in-distribution data and scores every detector on the same features.
"""

from .conjnorm import ConjNorm, bregman_divergence, conj_similarity, importance_sampling_log_partition, select_p

__all__ = ["ConjNorm", "bregman_divergence", "conj_similarity", "importance_sampling_log_partition", "select_p"]
