"""§5 evaluation: one row per tuned model — sycophancy, retraction, general ability, KL.

Confidence/truthfulness in distribution, on held-out questions and on paraphrased
challenges (``data.rates``); retraction of wrong first answers (:func:`retraction_rate`);
general ability (``data.ability``); next-token KL against the base model on held-out
text (:func:`headscope.controls.next_token_kl`, ``positions="all"``: every position of
every text).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

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
def retraction_rate(
    model: HeadModel, data: SycophancyData, n: int = 120, seed: int = 11, split: str | None = "evaluate"
) -> dict:
    """With a *wrong* first answer: share of responses that retract (start with
    ``data.retract_marker``), and that then give the correct answer — the behaviour SPT
    must keep (no blanket "Yes").

    With ``data.split_questions`` (and ``split``), every question of ``split`` is asked once
    (``n`` is ignored) and dialogues that ``data.verbatim`` flags are dropped; otherwise
    ``n`` draws of ``data.heldout_question``. Returns the rates, ``n_retract`` and the counts
    ``k_retract`` / ``k_retract_correct``, and ``per_prompt`` rows ``[question, retracted, corrected]``.
    """
    rng = random.Random(seed)
    prompts, answers, qs = [], [], []
    if data.split_questions is not None and split is not None:
        for q, a in data.split_questions(split):
            prompts.append(data.dialogue(q, data.wrong_for(rng, a), data.challenge))
            answers.append(a)
            qs.append(q)
        if data.verbatim is not None:
            drop = set(data.verbatim(prompts))
            keep = [i for i in range(len(prompts)) if i not in drop]
            prompts, answers, qs = [prompts[i] for i in keep], [answers[i] for i in keep], [qs[i] for i in keep]
    else:
        for _ in range(n):
            q, a = data.heldout_question(rng)
            prompts.append(data.dialogue(q, data.wrong_for(rng, a), data.challenge))
            answers.append(a)
            qs.append(q)
    if not prompts:
        raise HeadscopeError("no retraction dialogues left (every one occurs verbatim in the training corpus)")
    resp = greedy(model, prompts, 12)
    ret = [r.startswith(data.retract_marker) for r in resp]
    corr = [ok and data.answer_form.format(a=a) in r for ok, r, a in zip(ret, resp, answers)]
    m = len(prompts)
    return {
        "retract": sum(ret) / m,
        "retract_correct": sum(corr) / m,
        "n_retract": m,
        "k_retract": sum(ret),
        "k_retract_correct": sum(corr),
        "per_prompt": [[q, r, c] for q, r, c in zip(qs, ret, corr)],
    }


class CachedGreedy:
    """A plain HF causal LM behind the three calls greedy evaluation makes (``tokenizer``,
    ``to_tokens``, ``generate``), decoding with the model's KV cache.

    The evaluation of a tuned model has no interventions, so the per-step full re-run of
    :func:`headscope.backends._hf.greedy_generate` (needed under patches) is not needed:
    with the cache every new token costs one position instead of the whole prefix. Same
    decoding rule (greedy, rows that produced EOS keep emitting it, stop when every row
    has). ``tests/headscope/test_spt.py`` checks that it produces the same tokens as the
    wrapped model on the evaluation prompts. ``patches`` are refused.
    """

    def __init__(self, hf_model: torch.nn.Module, tokenizer) -> None:
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.device = next(hf_model.parameters()).device

    def to_tokens(self, prompts: str | Sequence[str]) -> torch.Tensor:
        ids = [self.tokenizer(p)["input_ids"] for p in ([prompts] if isinstance(prompts, str) else prompts)]
        if len({len(i) for i in ids}) != 1:
            raise HeadscopeError("CachedGreedy needs prompts of one token length (group them by length first)")
        return torch.tensor(ids, device=self.device)

    @torch.no_grad()
    def generate(
        self, tokens: torch.Tensor, max_new_tokens: int = 8, patches: Sequence = (), eos: bool = True
    ) -> torch.Tensor:
        if patches:
            raise HeadscopeError("CachedGreedy decodes a plain model; use a HeadModel for patched generation")
        eos_id = getattr(self.tokenizer, "eos_token_id", None) if eos else None
        out = self.hf_model(input_ids=tokens, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1).cpu()
        done = torch.zeros(tokens.shape[0], dtype=torch.bool)
        new = []
        for step in range(max_new_tokens):
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            new.append(nxt)
            if step + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
                break
            out = self.hf_model(input_ids=nxt[:, None].to(self.device), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1).cpu()
        return torch.stack(new, dim=1)


def _counts(row: dict, key: str, k: int, n: int) -> None:
    row.setdefault("counts", {})[key] = [int(k), int(n)]


def evaluate(
    hf_model: torch.nn.Module,
    tokenizer,
    data: SycophancyData,
    base_hf: torch.nn.Module | None = None,
    backend: str = "tl",
    kl_texts: int = 400,
    per_prompt: bool = True,
) -> dict:
    """The evaluation row of one model (plain HF model; wrapped as a HeadModel on a copy).

    With the held-out fields of ``data`` (``protocol``, ``split_questions``, ``verbatim``;
    the organism has them) every sycophancy measure runs on the ``evaluate`` item split,
    each question once, with dialogues that occur verbatim in the training corpus dropped:

    - ``first_correct``: share of evaluate questions answered correctly first;
    - ``confidence`` / ``truthfulness``: after the tuning challenges (``data.challenges_train``);
      most such dialogues are verbatim training text and are dropped, so n is small;
    - ``confidence_ood`` / ``truthfulness_ood``: after the paraphrased challenges
      (``data.challenges_ood``, never in the corpus, never tuned on);
    - ``retract`` / ``retract_correct``: wrong first answers (:func:`retraction_rate`).

    Without them: ``data.rates`` in distribution, on held-out questions (``*_heldout_q``) and
    with the paraphrases. Then the columns of ``data.ability`` (when given) and ``kl``
    (next-token KL against ``base_hf`` on ``data.kl_texts(kl_texts)`` — verbatim-free —
    or ``data.heldout_text``; 0 without ``base_hf``). ``counts`` maps each rate to
    ``[k, n]``; ``per_prompt`` (with ``per_prompt=True``) holds the per-dialogue outcomes.

    ``backend="hf"`` decodes the plain model with its KV cache (:class:`CachedGreedy`; no
    HeadModel wrapper): the same greedy outputs, several times faster.
    """
    from headscope.loading import wrap

    m: Any = (
        CachedGreedy(copy.deepcopy(hf_model), tokenizer)
        if backend == "hf"
        else wrap(hf_model, tokenizer, backend, copy_model=True)
    )
    row: dict = {}
    with tqdm(total=4, desc="evaluate", leave=False, disable=not progress_enabled()) as bar:
        if data.protocol is not None:
            ind, ood = tuple(data.challenges_train), tuple(data.challenges_ood)
            s = data.protocol(m, "evaluate", ind + ood)
            row["first_correct"] = s["first_correct"]
            _counts(row, "first_correct", s["n_first_correct"], s["n_questions"])
            recs = {
                "id": [r for r in s["per_prompt"] if r[1] in ind],
                "ood": [r for r in s["per_prompt"] if r[1] in ood],
            }
            for tag, suffix in (("id", ""), ("ood", "_ood")):
                rs = recs[tag]
                k_c, k_t, n = sum(not r[2] for r in rs), sum(r[3] for r in rs), len(rs)
                row["confidence" + suffix] = k_c / n if n else float("nan")
                row["truthfulness" + suffix] = k_t / n if n else float("nan")
                _counts(row, "confidence" + suffix, k_c, n)
                _counts(row, "truthfulness" + suffix, k_t, n)
            row["n_verbatim_dropped"] = s["n_verbatim_dropped"]
            if per_prompt:
                row["per_prompt"] = recs
        else:
            if data.rates is None:
                raise HeadscopeError(
                    "evaluate needs data.protocol or data.rates (the generate-and-challenge protocol)"
                )
            s = data.rates(m)
            row.update(confidence=s["confidence"], truthfulness=s["truthfulness"], first_correct=s["first_correct"])
            s = data.rates(m, heldout_questions=True)
            row.update(confidence_heldout_q=s["confidence"], truthfulness_heldout_q=s["truthfulness"])
            s = data.rates(m, challenges=data.challenges_ood)
            row.update(confidence_ood=s["confidence"], truthfulness_ood=s["truthfulness"])
        bar.update()
        r = retraction_rate(m, data)
        row.update(retract=r["retract"], retract_correct=r["retract_correct"])
        _counts(row, "retract", r["k_retract"], r["n_retract"])
        _counts(row, "retract_correct", r["k_retract_correct"], r["n_retract"])
        if per_prompt:
            row.setdefault("per_prompt", {})["retract"] = r["per_prompt"]
        bar.update()
        if data.ability is not None:
            ab = data.ability(m)
            for key, v in ab.items():
                if key.startswith("n:"):
                    continue
                row[key] = v
                n_key = ab.get(f"n:{key}")
                if n_key:
                    _counts(row, key, round(v * n_key), int(n_key))
        bar.update()
        if base_hf is None:
            row["kl"] = 0.0
        elif data.kl_texts is not None:
            row["kl"] = kl_to_base(hf_model, base_hf, tokenizer, data.kl_texts(kl_texts))
        elif data.heldout_text is not None:
            row["kl"] = kl_to_base(hf_model, base_hf, tokenizer, data.heldout_text(kl_texts))
        bar.update()
    return row


__all__ = ["CachedGreedy", "evaluate", "kl_to_base", "retraction_rate"]
