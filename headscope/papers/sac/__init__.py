"""Sparse Activation Control (SAC; Xiao et al., "Enhancing Multiple Dimensions of
Trustworthiness in LLMs via Sparse Activation Control", NeurIPS 2024).

Paper section → file:

- §3.2 identify the heads of each behaviour (path patching per task, top-k by |score|,
  Jaccard overlap) → :mod:`~headscope.papers.sac.identify`;
- §3.3 fit a Gaussian transport map per head on the model's own desired/undesired
  activations, gated to in-distribution inputs → :mod:`~headscope.papers.sac.fit`
  (the maps and the gate are the :mod:`headscope.steering` engine);
- §4.1 baselines: ITI probe heads, RepE / RepE-Mean / RepE-Merge, random heads
  → :mod:`~headscope.papers.sac.baselines`;
- §4 evaluation: each condition's task measures, general ability and last-position
  KL → :mod:`~headscope.papers.sac.evaluate`;
- ``headscope sac identify|fit|apply|evaluate``, ``headscope steer generate``
  → :mod:`~headscope.papers.sac.cli`.

Every string the pipeline reads (stimulus pairs, fitting prompts and their
desired/undesired tokens, the gate's off-target prompt groups, KL texts, the measures)
arrives in a :class:`headscope.tasks.sac.SacData`; :func:`headscope.tasks.sac.organism_sac`
builds it for the bundled ``llama`` organism. Usage::

    from headscope.papers import sac
    from headscope.tasks.sac import organism_sac

    data = organism_sac()
    sel = sac.identify(model, data, k=4)
    ctl = sac.fit_all(model, data, sac.heads_of(sel))
    rows = sac.evaluate_all(model, data, {"none": [], "sac:all": sac.compose(*ctl.values())})

The reproduction of the paper's table is ``experiments/sac_table.py``; docs/sac.md.
"""

from headscope.papers.sac.baselines import (
    iti_heads,
    random_control_heads,
    repe_data,
    repe_fit,
    repe_mean,
    repe_merge,
)
from headscope.papers.sac.evaluate import (
    KL,
    conflict_summary,
    evaluate_all,
    evaluate_condition,
    evaluate_outcomes,
    last_token_kl,
    markdown_table,
)
from headscope.papers.sac.fit import (
    activations,
    background_groups,
    collect,
    fit,
    fit_all,
    gate_controller,
    samples,
    split_desired,
)
from headscope.papers.sac.identify import (
    heads_of,
    identify,
    identify_task,
    jaccard,
    load_heads,
    overlap,
    path_scores,
    save,
    summary,
)
from headscope.steering import compose

__all__ = [
    "KL",
    "activations",
    "background_groups",
    "collect",
    "compose",
    "conflict_summary",
    "evaluate_all",
    "evaluate_condition",
    "evaluate_outcomes",
    "fit",
    "fit_all",
    "gate_controller",
    "heads_of",
    "identify",
    "identify_task",
    "iti_heads",
    "jaccard",
    "last_token_kl",
    "load_heads",
    "markdown_table",
    "overlap",
    "path_scores",
    "random_control_heads",
    "repe_data",
    "repe_fit",
    "repe_mean",
    "repe_merge",
    "samples",
    "save",
    "split_desired",
    "summary",
]
