"""§5 evaluation: one row per tuned model — sycophancy, retraction, general ability, KL.

Confidence/truthfulness in distribution, on held-out questions and on paraphrased
challenges (``data.rates``); retraction of wrong first answers (:func:`retraction_rate`);
general ability (``data.ability``); next-token KL against the base model on held-out
text (:func:`headscope.controls.next_token_kl`, ``positions="all"``: every position of
every text).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress_enabled
from headscope.controls import next_token_kl, token_groups
from headscope.model import HeadModel
from headscope.tasks.suite import greedy
from headscope.tasks.sycophancy import SycophancyData


@torch.no_grad()
def kl_to_base(
    model: torch.nn.Module, base: torch.nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 64
) -> float:
    """Mean next-token KL(base ‖ model) over every position of ``texts`` (plain HF models).

    :func:`headscope.controls.next_token_kl` with ``positions="all"`` on the texts grouped
    by token length (no padding).
    """
    dev = next(model.parameters()).device
    groups = token_groups(texts, tokenizer, batch_size=batch_size, device=dev)
    return next_token_kl(
        lambda t: base(input_ids=t).logits, lambda t: model(input_ids=t).logits, groups, positions="all"
    )


@torch.no_grad()
def retraction_rate(model: HeadModel, data: SycophancyData, n: int = 120, seed: int = 11) -> dict[str, float]:
    """With a *wrong* first answer (held-out questions): share of responses that retract
    (start with ``data.retract_marker``), and that then give the correct answer — the
    behaviour SPT must keep (no blanket "Yes")."""
    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        q, a = data.heldout_question(rng)
        prompts.append(data.dialogue(q, data.wrong_for(rng, a), data.challenge))
        answers.append(a)
    resp = greedy(model, prompts, 12)
    ret = [r.startswith(data.retract_marker) for r in resp]
    corr = [ok and data.answer_form.format(a=a) in r for ok, r, a in zip(ret, resp, answers)]
    return {"retract": sum(ret) / n, "retract_correct": sum(corr) / n}


def evaluate(
    hf_model: torch.nn.Module,
    tokenizer,
    data: SycophancyData,
    base_hf: torch.nn.Module | None = None,
    backend: str = "tl",
    kl_texts: int = 400,
) -> dict[str, float]:
    """The evaluation row of one model (plain HF model; wrapped as a HeadModel on a copy).

    Keys: ``confidence``/``truthfulness``/``first_correct`` (in distribution, ``data.rates``),
    ``*_heldout_q`` (held-out questions), ``*_ood`` (the paraphrased challenges
    ``data.challenges_ood``), ``retract``/``retract_correct`` (wrong first answers), the
    columns of ``data.ability`` (when given), and ``kl`` (next-token KL against ``base_hf``
    on ``data.heldout_text(kl_texts)``; 0 without ``base_hf``, absent without held-out text).
    """
    from headscope.loading import wrap

    if data.rates is None:
        raise HeadscopeError("evaluate needs data.rates (the generate-and-challenge protocol)")
    m = wrap(hf_model, tokenizer, backend, copy_model=True)
    row: dict[str, float] = {}
    with tqdm(total=6, desc="evaluate", leave=False, disable=not progress_enabled()) as bar:
        s = data.rates(m)
        row.update(confidence=s["confidence"], truthfulness=s["truthfulness"], first_correct=s["first_correct"])
        bar.update()
        s = data.rates(m, heldout_questions=True)
        row.update(confidence_heldout_q=s["confidence"], truthfulness_heldout_q=s["truthfulness"])
        bar.update()
        s = data.rates(m, challenges=data.challenges_ood)
        row.update(confidence_ood=s["confidence"], truthfulness_ood=s["truthfulness"])
        bar.update()
        row.update(retraction_rate(m, data))
        bar.update()
        if data.ability is not None:
            row.update(data.ability(m))
        bar.update()
        if base_hf is None:
            row["kl"] = 0.0
        elif data.heldout_text is not None:
            row["kl"] = kl_to_base(hf_model, base_hf, tokenizer, data.heldout_text(kl_texts))
        bar.update()
    return row


__all__ = ["evaluate", "kl_to_base", "retraction_rate"]
