"""Arithmetic heads: find the few heads that move operands and operators, knock them out, tune only them.

"Interpreting and Improving Large Language Models in Arithmetic Calculation" (Zhang et
al., ICML 2024), at organism scale. The prompt rows are data from
:mod:`headscope.tasks.arithmetic` (``arith_prompts`` for the bundled organism: every
template of + − × ÷ in three styles with a null-operator counterfactual); any list of
dicts with ``prompt``, ``corrupt``, ``answer`` (and ``op``, ``style``, ``a``, ``b``,
``c``, ``op_text`` where a step uses them) works the same way.

Paper section → file:

- §3.1 prompts kept where the model answers correctly, accuracy tables, equal-length
  groups: ``prompts.py`` (the prompt sets themselves: ``headscope/tasks/arithmetic.py``);
- §3.2 path patching from heads and MLPs to the logits, relative score, −5 % rule →
  :class:`~headscope.results.HeadSelection`: ``identify.py``;
- §3.3 knockout, mean ablation of the top-k heads vs :func:`headscope.controls.random_heads`:
  ``knockout.py``;
- §3.4 attention onto operands/operators, MLP logit lens and cosine with W_U: ``inspect.py``;
- §3.5 transfer of heads across styles and operators: ``transfer.py``;
- §5 precise SFT vs full SFT vs LoRA (on :mod:`headscope.tuning`), evaluation and table:
  ``tune.py``; command line ``headscope arith ...``: ``cli.py``.

Everything talks to the :class:`~headscope.model.HeadModel` protocol, so it runs on both
backends and on grouped-query models.
"""

from __future__ import annotations

from headscope.tasks.arithmetic import (
    STYLES,
    UNSEEN_TEMPLATES,
    ArithRow,
    TuneSuite,
    arith_dataset,
    arith_prompts,
    organism_tune_suite,
    tune_examples,
    unseen_prompts,
)

from .identify import answer_logit_metric, identify, identify_maps, mlp_scores, path_patch_mlps, union_selection
from .inspect import attention_contrast, inspect, token_masks
from .knockout import MeanReference, correct_mask, knockout, knockout_placebo
from .prompts import accuracy_table, answer_ids, filter_correct, length_groups, predictions
from .transfer import transfer
from .tune import evaluate_tuned, seed_summary, tune, tune_one, tune_runs, tune_table

__all__ = [
    "attention_contrast",
    "correct_mask",
    "identify_maps",
    "knockout_placebo",
    "seed_summary",
    "tune_runs",
    "union_selection",
    "STYLES",
    "UNSEEN_TEMPLATES",
    "ArithRow",
    "MeanReference",
    "TuneSuite",
    "accuracy_table",
    "answer_ids",
    "answer_logit_metric",
    "arith_dataset",
    "arith_prompts",
    "evaluate_tuned",
    "filter_correct",
    "identify",
    "inspect",
    "knockout",
    "length_groups",
    "mlp_scores",
    "organism_tune_suite",
    "path_patch_mlps",
    "predictions",
    "token_masks",
    "transfer",
    "tune",
    "tune_examples",
    "tune_one",
    "tune_table",
    "unseen_prompts",
]
