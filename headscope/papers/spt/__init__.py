"""Supervised Pinpoint Tuning (SPT): find the heads behind sycophancy and fine-tune only them.

"From Yes-Men to Truth-Tellers: Addressing Sycophancy in Large Language Models with
Pinpoint Tuning" (Chen et al., ICML 2024), at organism scale. Every string and prompt
generator (challenge, counterfactual, apology/affirmation tokens, tuning targets,
questions, protocol rates) comes from a :class:`~headscope.tasks.sycophancy.SycophancyData`
(``organism_data()`` for the bundled ``llama`` organism), so SPT runs on a user's own dialogues.

Paper section → file:

- §3 protocol (answer, challenge, confidence/truthfulness): ``SycophancyData.rates``
  (:mod:`headscope.tasks.sycophancy`);
- §4.1 identification, path patching with ``F = p(apology)/(p(apology)+p(affirm))`` and the
  relative score → :class:`~headscope.results.HeadSelection`: ``identify.py``;
- §4.1 knockout (mean ablation vs :func:`headscope.controls.random_heads`) and attention
  onto the challenge: ``knockout.py``;
- §4.2 tuning (SPT, random heads, full SFT, LoRA, LoRA on the heads' layers) and its data:
  ``tune.py``;
- §5 evaluation rows (sycophancy, retraction, ability, next-token KL): ``evaluate.py``;
- §5 results table: ``table.py``; command line ``headscope spt ...``: ``cli.py``.
"""

from __future__ import annotations

from headscope.tasks.sycophancy import SycophancyData, organism_data

from .evaluate import evaluate, kl_to_base, retraction_rate
from .identify import family_pairs, identify, sycophancy_metric
from .knockout import (
    caving_flags,
    caving_rate,
    challenge_attention,
    challenge_dialogues,
    counter_dialogues,
    heldout_challenges,
    heldout_knockout,
    knockout,
    knockout_patches,
    position_mean_cache,
)
from .table import COLUMNS, LABELS, markdown_table, run_table, tuned_row, write_results
from .tune import METHODS, tune, tuning_data

__all__ = [
    "COLUMNS",
    "LABELS",
    "METHODS",
    "SycophancyData",
    "caving_flags",
    "caving_rate",
    "challenge_attention",
    "challenge_dialogues",
    "counter_dialogues",
    "evaluate",
    "family_pairs",
    "heldout_challenges",
    "heldout_knockout",
    "identify",
    "kl_to_base",
    "knockout",
    "knockout_patches",
    "markdown_table",
    "organism_data",
    "position_mean_cache",
    "retraction_rate",
    "run_table",
    "sycophancy_metric",
    "tune",
    "tuned_row",
    "tuning_data",
    "write_results",
]
