"""The analyses a circuit check can name (``method = ...``), kept in :data:`METHODS`.

A method is ``fn(model, check: CheckSpec) -> HeadResult | Tensor[layer, head]``; add
one with :func:`register_method`. A method whose score is a mean over inputs puts the
per-input scores ``[n, layer, head]`` in ``info["per_input"]``; the report then gives each
expected head a bootstrap interval over inputs (activation patching gets its interval
from :func:`headscope.circuits.check.patching_interval`). Built in: ``patching`` (activation patching of every
head), ``head_score:previous_token`` / ``head_score:induction`` (targeted attention on
repeated tokens, :mod:`headscope.head_scores`) and ``attention`` (mean attention onto a
key position defined from the query).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from headscope.circuits.spec import CheckSpec, MethodFn, register_method
from headscope.common.errors import HeadscopeError
from headscope.head_scores import attention_to, random_input_tokens, repeat_scores
from headscope.results import HeadResult


# --------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------
def _known(check: CheckSpec, allowed: Iterable[str]) -> None:
    extra = set(check.options) - set(allowed)
    if extra:
        raise HeadscopeError(
            f"{check.circuit.where} check {check.index + 1}: method {check.method!r} takes no option "
            f"{sorted(extra)[0]!r} "
            f"(options: {', '.join(sorted(allowed)) or 'none'})"
        )


@register_method("patching")
def method_patching(model, check: CheckSpec) -> HeadResult:
    """Activation patching of every head (``patch_task``). Options: ``mode`` (denoise |
    noise), ``per_position`` (bool) with ``pos`` (the position whose scores are checked;
    without it per-position scores are summed over positions)."""
    from headscope.patching import patch_task

    _known(check, ("mode", "per_position", "pos", "max_rows"))
    mode = check.opt("mode", "denoise")
    per_pos = bool(check.opt("per_position", False))
    res = patch_task(
        model,
        check.make_task(),
        mode=mode,
        per_position=per_pos,
        max_rows=int(check.opt("max_rows", 512)),
        show_progress=False,
    )
    if per_pos and check.opt("pos") is not None:
        pos = int(check.opt("pos"))
        res = HeadResult(res.scores[:, pos, :], ("layer", "head"), {}, {**res.info, "pos": pos})
    return res


def _native(model) -> bool:
    """A compiled program (tracr) rather than a language model: random inputs come from
    its input vocabulary and span its whole context."""
    return not model.supports("generate") and model.n_ctx is not None


def _head_score(kind: str) -> MethodFn:
    def fn(model, check: CheckSpec) -> HeadResult:
        """Targeted-attention head scores (:mod:`headscope.head_scores`). Bundled HF organisms:
        ``head_scores_induction`` (random tokens repeated once). Native (tracr) models: random
        inputs of the model's full length; previous-token = mean attention from q >= 2 to
        q − 1, induction = on ``[BOS r r]``, mean attention from the second copy to the token
        after the earlier occurrence (BOS is never a target: tracr heads park on BOS by default)."""
        _known(check, ("n", "seq", "seed"))
        n, seed = int(check.opt("n", 64)), int(check.opt("seed", 0))
        if _native(model):
            T = int(model.n_ctx)
            if kind == "previous_token":
                toks = random_input_tokens(model, n, T, seed)
                _, cache = model.run_with_heads(toks, sites=(), pattern=True)
                per = torch.stack(
                    [
                        attention_to(cache.pattern[L], lambda q, T: q - 1 if q >= 2 else None, per_input=True)
                        for L in range(model.n_layers)
                    ],
                    dim=1,
                )
            else:
                seq = int(check.opt("seq", (T - 1) // 2))
                r = random_input_tokens(model, n, seq + 1, seed)
                toks = torch.cat([r, r[:, 1:]], dim=1)
                per = repeat_scores(model, toks, seq, bos_target=False, per_input=True)["induction"]
        else:
            from headscope.organisms.evaluate import head_scores_induction

            per = head_scores_induction(model, n=n, seq=int(check.opt("seq", 20)), seed=seed, per_input=True)[kind]
        info = {"method": f"head_score:{kind}", "model": model.name, "per_input": per.float().cpu()}
        return HeadResult(per.mean(0), ("layer", "head"), {}, info)

    fn.__name__ = f"head_score_{kind}"
    return fn


register_method("head_score:previous_token", _head_score("previous_token"))
register_method("head_score:induction", _head_score("induction"))

_PATTERNS: dict[str, Callable[[int], Callable[[int, int], int | None]]] = {
    # target key of query q in a sequence of T positions (0 = BOS); k = option ``offset``
    "offset": lambda k: lambda q, T: q - k if q - k >= 1 else None,
    "reverse": lambda k: lambda q, T: T - q if q >= 1 else None,
    "bos": lambda k: lambda q, T: 0 if q >= 1 else None,
    "self": lambda k: lambda q, T: q if q >= 1 else None,
}


@register_method("attention")
def method_attention(model, check: CheckSpec) -> HeadResult:
    """Mean attention of every head onto a key position defined from the query: options
    ``pattern`` = ``offset`` (key ``q − offset``; real tokens only), ``reverse`` (key
    ``T − q``: position i of ``BOS x_1..x_n`` attends to ``x_{n+1−i}``), ``bos`` or
    ``self``; inputs are the task's clean prompts when the spec has a task, else ``n``
    random inputs of the model's full length (native models) — ``seed`` fixes them."""
    _known(check, ("pattern", "offset", "n", "seed"))
    pat = str(check.opt("pattern", "offset"))
    if pat not in _PATTERNS:
        raise HeadscopeError(
            f"{check.circuit.where}: unknown attention pattern {pat!r}; use one of {', '.join(_PATTERNS)}"
        )
    if check.circuit.task:
        toks = check.make_task().prepare(model).clean
    elif _native(model):
        toks = random_input_tokens(model, int(check.opt("n", 64)), model.n_ctx, int(check.opt("seed", 0)))
    else:
        raise HeadscopeError(
            f"{check.circuit.where}: method 'attention' on {model.name} needs a [task] whose clean prompts it reads"
        )
    _, cache = model.run_with_heads(toks, sites=(), pattern=True)
    target = _PATTERNS[pat](int(check.opt("offset", 1)))
    per = torch.stack([attention_to(cache.pattern[L], target, per_input=True) for L in range(model.n_layers)], dim=1)
    info = {"method": "attention", "pattern": pat, "model": model.name, "per_input": per.float().cpu()}
    return HeadResult(per.mean(0), ("layer", "head"), {}, info)
