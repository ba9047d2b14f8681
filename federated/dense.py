"""DENSE: data-free one-shot FL by ensemble distillation with a generator (Zhang et al., NeurIPS 2022).

As in Co-Boosting's re-implementation (rong-dai/Co-Boosting ``DENSESynthesizer``): each
epoch a re-initialised generator is trained on ``CE(T(x), y) − adv·KL(T(x) ‖ S(x))``, the
adversarial term only on samples where student and teacher disagree; the batch joins a
pool and the student is distilled on the pool from the equal-weight ensemble. No hard-
sample weighting, no ensemble re-weighting, no output-diversified sampling (those are
Co-Boosting's additions, :mod:`federated.coboosting`).
"""

from __future__ import annotations

from .distill import DataFreeVariant, data_free_distill
from .ensemble import WeightedEnsemble
from .protocol import FLConfig, ServerEnv, ServerProgram, ServerResult, build_model, train_all_clients

VARIANT = DataFreeVariant(hard_samples=False, mask_disagree=True, reweight=False, ods=False)


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program: collect client models once, distil their ensemble into a fresh student on synthetic data."""
    models, _ = yield from train_all_clients(cfg, env)
    teacher = WeightedEnsemble(models).eval()
    student = build_model(cfg, env.input_shape, env.num_classes, seed_offset=1)
    extra = data_free_distill(cfg, teacher, student, env.input_shape, env.num_classes, VARIANT, desc="dense")
    return ServerResult(student.eval(), extra)
