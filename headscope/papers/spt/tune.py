"""§4.2 Supervised Pinpoint Tuning and its controls, on the same data and budget.

Only the selected heads' W_Q, W_K, W_V, W_O slices train (grouped-query models: W_Q and
W_O) via :mod:`headscope.tuning`, on two-turn data where the assistant defends a correct
first answer and retracts a wrong one (:func:`tuning_data`). Controls: as many random
heads (:func:`headscope.controls.random_heads`, never a selected head), full SFT, LoRA
r16 on every layer, LoRA r16 on the selected heads' layers.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import torch

from headscope.common.errors import HeadscopeError
from headscope.controls import random_heads
from headscope.results import Head
from headscope.tasks.sycophancy import SycophancyData
from headscope.tuning import TuneConfig, TuneLog, setup, train

METHODS = ("spt", "random_heads", "full_sft", "lora", "lora_layers")


def tuning_data(
    data: SycophancyData,
    n: int = 2000,
    seed: int = 0,
    defend_share: float = 0.5,
    challenges: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Two-turn (prompt, response) pairs on training-split questions.

    With probability ``defend_share`` the first answer is correct and the response
    defends it (``data.defend``, e.g. ``Yes , I am sure . The answer is A .``); otherwise
    the first answer is wrong (``data.wrong_for``) and the response retracts it and gives
    the correct one (``data.retract``). The challenge is drawn from ``challenges``
    (default ``data.challenges_train``); held-out questions (``data.is_heldout``) are skipped.
    """
    if n < 1:
        raise HeadscopeError(f"n must be >= 1, got {n}")
    if not 0 <= defend_share <= 1:
        raise HeadscopeError(f"defend_share must be in [0, 1], got {defend_share}")
    pool = list(challenges if challenges is not None else data.challenges_train)
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        q, a = data.question(rng)
        if data.is_heldout(q):
            continue
        ch = rng.choice(pool)
        if rng.random() < defend_share:
            out.append((data.dialogue(q, a, ch), data.defend.format(a=a)))
        else:
            w = data.wrong_for(rng, a)
            out.append((data.dialogue(q, w, ch), data.retract.format(a=a)))
    return out


def _head_grid(hf_model: torch.nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of a Hugging Face model, from its config."""
    cfg: Any = getattr(hf_model, "config", None)
    if cfg is None:
        raise HeadscopeError("the random_heads method needs a Hugging Face model with a config")
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def tune(
    base_hf: torch.nn.Module,
    tokenizer,
    method: str,
    heads: Sequence[Head],
    examples: Sequence[tuple[str, str]],
    cfg: TuneConfig | None = None,
    seed: int = 0,
    lora_r: int = 16,
) -> tuple[torch.nn.Module, TuneLog]:
    """Fine-tune a copy of ``base_hf`` with one of :data:`METHODS`; returns (plain HF model, log).

    ``spt``: the selected heads' q/k/v/o slices (GQA: q/o); ``random_heads``: as many
    heads from :func:`headscope.controls.random_heads` (``seed``, excluding ``heads``;
    listed in ``log.info["random_heads"]``); ``full_sft``: every parameter; ``lora``: LoRA
    r16 on q/k/v/o in every layer; ``lora_layers``: the same only in the selected heads' layers.
    """
    if method not in METHODS:
        raise HeadscopeError(f"unknown SPT method {method!r}; use one of {', '.join(METHODS)}")
    if method in ("spt", "random_heads", "lora_layers") and not heads:
        raise HeadscopeError(f"method {method!r} needs the selected heads; run identify first (or pass --heads)")
    cfg = cfg or TuneConfig()
    model = copy.deepcopy(base_hf)
    info: dict = {}
    if method == "spt":
        st = setup(model, "heads", cfg, heads=heads)
    elif method == "random_heads":
        n_layers, n_heads = _head_grid(model)
        pick = random_heads(n_layers, n_heads, len(heads), seed, exclude=heads)
        st = setup(model, "heads", cfg, heads=pick)
        info["random_heads"] = [list(h) for h in pick]
    elif method == "full_sft":
        st = setup(model, "full", cfg)
    elif method == "lora":
        st = setup(model, "lora", cfg, lora_r=lora_r)
    else:
        st = setup(model, "lora", cfg, lora_r=lora_r, lora_layers=sorted({L for L, _ in heads}))
    tlog = train(st, tokenizer, examples, cfg, name=method)
    tlog.info.update(info)
    tlog.method = method
    return st.finish(), tlog


__all__ = ["METHODS", "tune", "tuning_data"]
