"""Known circuits as regression tests: TOML spec files, ``check(spec)`` and ``assert_circuit``.

A *circuit spec* names a model, a task and one or more analyses ("checks"), and for each
check the heads that must show up with their roles and tolerances. ``check(path)``
reruns the analyses and reports, per head, the measured score, its rank among all heads
(by ``|score|``, 1 = strongest) and whether every expectation holds; a model or code
change that moves a circuit fails loudly. The same check runs from the command line
(``headscope circuits check SPEC...``: exit 0 all pass, 1 drift, 2 bad spec) and from
pytest (:func:`assert_circuit`).

Spec format (TOML, read with ``tomllib``)::

    name = "induction organism"
    model = "induction"            # bundled alias, folder (relative to the spec), hub id, tracr:NAME
    backend = "tl"                 # tl | nnsight [tl]
    needs_weights = false          # true: skip (with a reason) when the weights are not local

    [task]                         # a registered task and its kwargs ...
    name = "induction"
    n = 24
    # ... or inline pairs: clean = [...], corrupt = [...], answers = [...], wrong = [...]
    # ... or pairs = "file.jsonl" (clean, corrupt, answer, wrong per line)

    [[check]]
    method = "patching"            # a key of METHODS; other keys are the method's options
    mode = "noise"
    heads = [
      { head = "L0H0", role = "previous-token", expect = ["rank <= 1", "score <= -0.9"] },
    ]

A single check may also be written at top level (``method = ...`` plus ``heads = [...]``).
Heads are written ``L9H6``, ``9.6`` or ``[9, 6]``. Expectations compare ``rank``,
``score`` or ``|score|`` with ``<=``, ``>=``, ``<``, ``>`` or ``==`` against a number.

Methods are functions ``fn(model, check: CheckSpec) -> HeadResult | Tensor[layer, head]``
kept in :data:`METHODS`; add one with :func:`register_method`.
"""

from __future__ import annotations

import math
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.results import HeadResult

MethodFn = Callable[[Any, "CheckSpec"], "HeadResult | Tensor"]

# --------------------------------------------------------------------------------------
# spec objects
# --------------------------------------------------------------------------------------
_EXPECT = re.compile(
    r"^\s*(rank|score|\|score\||abs_score)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "==": lambda a, b: a == b,
}
_HEAD_FORMS = (re.compile(r"^[Ll](\d+)[Hh](\d+)$"), re.compile(r"^(\d+)[.:](\d+)$"))


@dataclass(frozen=True)
class Expectation:
    """One tolerance: ``quantity op value`` with quantity ``rank``, ``score`` or ``|score|``."""

    quantity: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str, where: str) -> Expectation:
        m = _EXPECT.match(str(text))
        if not m:
            raise HeadscopeError(
                f"{where}: cannot read the expectation {text!r}; write e.g. 'rank <= 5', 'score >= 0.7' or '|score| <= 0.05'"
            )
        q = "|score|" if m.group(1) == "abs_score" else m.group(1)
        return cls(q, m.group(2), float(m.group(3)))

    def holds(self, rank: int, score: float) -> bool:
        """Whether the measured (rank, score) meets this expectation (NaN never does)."""
        x = {"rank": float(rank), "score": score, "|score|": abs(score)}[self.quantity]
        return not math.isnan(x) and _OPS[self.op](x, self.value)

    def __str__(self) -> str:
        v = int(self.value) if self.quantity == "rank" else self.value
        return f"{self.quantity} {self.op} {v:g}" if isinstance(v, float) else f"{self.quantity} {self.op} {v}"


@dataclass
class HeadSpec:
    """An expected head: position, role (free text) and its expectations."""

    layer: int
    head: int
    role: str
    expect: list[Expectation]

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass
class CheckSpec:
    """One analysis of a circuit spec: a method, its options and the heads it must find."""

    method: str
    options: dict[str, Any]
    heads: list[HeadSpec]
    circuit: CircuitSpec = field(repr=False)
    index: int = 0

    def opt(self, key: str, default: Any = None) -> Any:
        """A method option from the spec (``mode``, ``per_position``...) or ``default``."""
        return self.options.get(key, default)

    def make_task(self):
        """The circuit's task (see :meth:`CircuitSpec.make_task`)."""
        return self.circuit.make_task()

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method}" + (f" ({opts})" if opts else "")


@dataclass
class CircuitSpec:
    """A parsed circuit spec file (see the module docstring for the format)."""

    path: Path | None
    name: str
    model: str
    backend: str
    task: dict[str, Any] | None
    checks: list[CheckSpec]
    needs_weights: bool = False
    description: str = ""
    device: str = "cpu"

    def make_task(self):
        """A :class:`headscope.tasks.Task` from ``[task]``: a registered task with kwargs,
        inline ``clean``/``corrupt``/``answers``/``wrong`` lists, or a ``pairs`` file."""
        from headscope.tasks import TASKS, Task, get_task
        from headscope.tasks.base import load_pairs

        where = self.where
        t = dict(self.task or {})
        if not t:
            raise HeadscopeError(
                f"{where}: this check needs a [task] table (name = 'induction', or inline clean/corrupt/answers/wrong)"
            )
        if "pairs" in t:
            p = Path(t["pairs"])
            if not p.is_absolute() and self.path is not None:
                p = self.path.parent / p
            return load_pairs(str(p))
        if "clean" in t:
            missing = [k for k in ("clean", "corrupt", "answers", "wrong") if k not in t]
            if missing:
                raise HeadscopeError(
                    f"{where}: inline [task] lacks {', '.join(missing)}; give clean, corrupt, answers and wrong lists"
                )
            return Task(
                str(t.get("name", "inline")),
                [str(x) for x in t["clean"]],
                [str(x) for x in t["corrupt"]],
                [str(x) for x in t["answers"]],
                [str(x) for x in t["wrong"]],
                description=str(t.get("description", "pairs from the spec")),
            )
        name = t.pop("name", None)
        if name is None:
            raise HeadscopeError(f"{where}: [task] needs a name ({', '.join(TASKS)}), inline pairs, or a pairs file")
        try:
            return get_task(str(name), **t)
        except TypeError as e:
            raise HeadscopeError(
                f"{where}: task {name!r} does not take these arguments ({e}); check the keys of [task]"
            ) from e

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else self.name


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------
_TOP_KEYS = {"name", "description", "model", "backend", "device", "needs_weights", "task", "check", "method", "heads"}


def parse_head(value: Any, where: str) -> tuple[int, int]:
    """``"L9H6"``, ``"9.6"``, ``"9:6"`` or ``[9, 6]`` → ``(9, 6)``."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    if isinstance(value, str):
        for rx in _HEAD_FORMS:
            m = rx.match(value.strip())
            if m:
                return int(m.group(1)), int(m.group(2))
    raise HeadscopeError(f"{where}: unknown head format {value!r}; write a head as 'L9H6', '9.6' or [9, 6]")


def _parse_heads(raw: Any, where: str) -> list[HeadSpec]:
    if not isinstance(raw, list) or not raw:
        raise HeadscopeError(
            f"{where}: missing key 'heads' (a list of {{ head = 'L0H0', role = '...', expect = ['rank <= 5'] }})"
        )
    heads = []
    for i, h in enumerate(raw):
        w = f"{where} heads[{i}]"
        if not isinstance(h, dict) or "head" not in h:
            raise HeadscopeError(
                f"{w}: missing key 'head'; write {{ head = 'L0H0', role = '...', expect = ['rank <= 5'] }}"
            )
        unknown = set(h) - {"head", "role", "expect"}
        if unknown:
            raise HeadscopeError(f"{w}: unknown key {sorted(unknown)[0]!r}; a head entry takes head, role and expect")
        L, H = parse_head(h["head"], w)
        exp = h.get("expect")
        if exp is None:
            raise HeadscopeError(f"{w}: missing key 'expect' (e.g. expect = ['rank <= 5'])")
        exp = [exp] if isinstance(exp, str) else exp
        if not isinstance(exp, list) or not exp:
            raise HeadscopeError(f"{w}: 'expect' must be a non-empty list of strings such as 'rank <= 5'")
        heads.append(HeadSpec(L, H, str(h.get("role", "")), [Expectation.parse(e, w) for e in exp]))
    return heads


def _parse_check(raw: dict, spec: CircuitSpec, i: int) -> CheckSpec:
    where = f"{spec.where} check {i + 1}"
    if "method" not in raw:
        raise HeadscopeError(f"{where}: missing key 'method' (one of {', '.join(METHODS)})")
    method = str(raw["method"])
    if method not in METHODS:
        raise HeadscopeError(f"{where}: unknown method {method!r}; use one of {', '.join(METHODS)}")
    heads = _parse_heads(raw.get("heads"), where)
    opts = {k: v for k, v in raw.items() if k not in ("method", "heads")}
    return CheckSpec(method, opts, heads, spec, i)


def load_spec(path: str | Path) -> CircuitSpec:
    """Read and validate a circuit spec; a problem raises a HeadscopeError naming the file,
    the key and the fix (missing key, unknown method, unknown head format, bad expectation)."""
    p = Path(path)
    if not p.is_file():
        raise HeadscopeError(f"circuit spec {path} does not exist; give the path of a .toml spec file")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HeadscopeError(f"{p}: not valid TOML ({e}); see docs/circuits.md for the format") from e
    return spec_from_dict(raw, p)


def spec_from_dict(raw: dict, path: Path | None = None) -> CircuitSpec:
    """A :class:`CircuitSpec` from an already-parsed TOML dict (``path`` resolves relative files)."""
    where = str(path) if path is not None else "circuit spec"
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise HeadscopeError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; top-level keys are {', '.join(sorted(_TOP_KEYS))}"
        )
    if "model" not in raw:
        raise HeadscopeError(
            f"{where}: missing key 'model' (a bundled organism such as 'induction', a folder, a hub id or 'tracr:NAME')"
        )
    backend = str(raw.get("backend", "tl"))
    if backend not in ("tl", "nnsight"):
        raise HeadscopeError(f"{where}: unknown backend {backend!r}; use 'tl' or 'nnsight'")
    model = str(raw["model"])
    if path is not None and model.startswith((".", "/", "~")):
        mp = (path.parent / model).expanduser() if model.startswith(".") else Path(model).expanduser()
        if not mp.is_dir():
            raise HeadscopeError(f"{where}: unknown model {model!r}: {mp} is not a folder")
        model = str(mp.resolve())
    task = raw.get("task")
    if task is not None and not isinstance(task, dict):
        raise HeadscopeError(f"{where}: 'task' must be a table ([task] with name = ... and its arguments)")
    spec = CircuitSpec(
        path,
        str(raw.get("name", path.stem if path else "circuit")),
        model,
        backend,
        task,
        [],
        bool(raw.get("needs_weights", False)),
        str(raw.get("description", "")),
        str(raw.get("device", "cpu")),
    )
    checks_raw = raw.get("check")
    if checks_raw is None:
        if "method" not in raw:
            raise HeadscopeError(f"{where}: missing key 'method' (or [[check]] tables); methods: {', '.join(METHODS)}")
        checks_raw = [{k: v for k, v in raw.items() if k == "method" or k == "heads"}]
    elif "method" in raw or "heads" in raw:
        raise HeadscopeError(f"{where}: give either a top-level method + heads or [[check]] tables, not both")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise HeadscopeError(f"{where}: 'check' must be an array of tables ([[check]])")
    spec.checks = [_parse_check(c, spec, i) for i, c in enumerate(checks_raw)]
    return spec


# --------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------
METHODS: dict[str, MethodFn] = {}


def register_method(name: str, fn: MethodFn | None = None):
    """Register ``fn(model, check) -> HeadResult | Tensor[layer, head]`` under ``name``
    (usable as a decorator). ``check.opt(key)`` reads options; ``check.make_task()`` the task."""
    if fn is None:
        return lambda f: register_method(name, f)
    METHODS[name] = fn
    return fn


def _known(check: CheckSpec, allowed: Iterable[str]) -> None:
    extra = set(check.options) - set(allowed)
    if extra:
        raise HeadscopeError(
            f"{check.circuit.where} check {check.index + 1}: method {check.method!r} takes no option {sorted(extra)[0]!r} "
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


def _tracr_like(model) -> bool:
    return getattr(model, "hf_model", True) is None and hasattr(model, "n_ctx")


def _random_native_tokens(model, n: int, length: int, seed: int) -> Tensor:
    """Random ``[BOS, x_1..x_{length-1}]`` over a native (tracr) model's ordinary input tokens."""
    tok = model.tokenizer
    ids = torch.tensor([i for w, i in tok.vocab.items() if w not in (tok.bos_token, tok.pad_token)])
    gen = torch.Generator().manual_seed(seed)
    body = ids[torch.randint(len(ids), (n, length - 1), generator=gen)]
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body], dim=1)


def attention_to(
    pattern: Float[Tensor, " batch head q k"], target: Callable[[int, int], int | None]
) -> Float[Tensor, " head"]:
    """Mean attention from each query ``q`` to key ``target(q, T)`` (queries whose target
    is None are skipped), averaged over the batch: ``[n_heads]``."""
    T = pattern.shape[-1]
    qs, ks = [], []
    for q in range(T):
        k = target(q, T)
        if k is not None and 0 <= k < T:
            qs.append(q)
            ks.append(k)
    if not qs:
        raise HeadscopeError("no query position has a target key for this attention pattern; use longer inputs")
    q, k = torch.tensor(qs), torch.tensor(ks)
    return pattern[:, :, q, k].mean(dim=(0, 2))


def _head_score(kind: str) -> MethodFn:
    def fn(model, check: CheckSpec) -> HeadResult:
        """TransformerLens head-detector scores. Bundled HF organisms: ``head_scores_induction``
        (random tokens repeated once). Native (tracr) models: random inputs of the model's
        full length; previous-token = mean attention from q >= 2 to q − 1, induction = on
        ``[BOS r r]``, mean attention from the second copy to the token after the earlier
        occurrence (BOS is never a target: tracr heads park on BOS by default)."""
        _known(check, ("n", "seq", "seed"))
        n, seed = int(check.opt("n", 64)), int(check.opt("seed", 0))
        if _tracr_like(model):
            T = model.n_ctx
            if kind == "previous_token":
                toks = _random_native_tokens(model, n, T, seed)
                _, cache = model.run_with_heads(toks, sites=(), pattern=True)
                scores = torch.stack(
                    [
                        attention_to(cache.pattern[L], lambda q, T: q - 1 if q >= 2 else None)
                        for L in range(model.n_layers)
                    ]
                )
            else:
                seq = int(check.opt("seq", (T - 1) // 2))
                r = _random_native_tokens(model, n, seq + 1, seed)
                toks = torch.cat([r, r[:, 1:]], dim=1)
                _, cache = model.run_with_heads(toks, sites=(), pattern=True)
                scores = torch.stack(
                    [
                        attention_to(cache.pattern[L], lambda q, T: q - seq + 1 if q > seq else None)
                        for L in range(model.n_layers)
                    ]
                )
        else:
            from headscope.organisms.evaluate import head_scores_induction

            scores = head_scores_induction(model, n=n, seq=int(check.opt("seq", 20)), seed=seed)[kind]
        return HeadResult(
            scores, ("layer", "head"), {}, {"method": f"head_score:{kind}", "model": getattr(model, "name", "?")}
        )

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
    elif _tracr_like(model):
        toks = _random_native_tokens(model, int(check.opt("n", 64)), model.n_ctx, int(check.opt("seed", 0)))
    else:
        raise HeadscopeError(
            f"{check.circuit.where}: method 'attention' on {model.name} needs a [task] whose clean prompts it reads"
        )
    _, cache = model.run_with_heads(toks, sites=(), pattern=True)
    target = _PATTERNS[pat](int(check.opt("offset", 1)))
    scores = torch.stack([attention_to(cache.pattern[L], target) for L in range(model.n_layers)])
    return HeadResult(
        scores, ("layer", "head"), {}, {"method": "attention", "pattern": pat, "model": getattr(model, "name", "?")}
    )


# --------------------------------------------------------------------------------------
# running a spec
# --------------------------------------------------------------------------------------
@dataclass
class HeadCheck:
    """The measured result for one expected head."""

    spec: HeadSpec
    score: float
    rank: int
    failed: list[Expectation]

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass
class CheckReport:
    """One analysis: its [layer, head] scores and the per-head verdicts."""

    check: CheckSpec
    scores: Float[Tensor, " layer head"]
    heads: list[HeadCheck]
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(h.passed for h in self.heads)

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        s = torch.nan_to_num(self.scores, nan=0.0)
        H = s.shape[1]
        idx = s.abs().flatten().argsort(descending=True)[:k]
        return [(int(i) // H, int(i) % H, float(s.flatten()[i])) for i in idx]


@dataclass
class CircuitReport:
    """Every check of one spec; ``passed`` is False on any failing head; ``skipped`` holds
    the reason when the spec could not run here (``needs_weights`` and no local weights)."""

    spec: CircuitSpec
    checks: list[CheckReport] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")

    def table(self) -> str:
        """A plain-text report: one block per check, one row per head, then the verdict."""
        s = self.spec
        lines = [f"circuit {s.name!r} ({s.where}): model {s.model}, backend {s.backend}"]
        if self.skipped:
            lines.append(f"SKIP: {self.skipped}")
            return "\n".join(lines)
        for c in self.checks:
            lines.append(
                f"check {c.check.index + 1}: {c.check.describe()}  [{c.seconds:.1f} s; top: "
                + ", ".join(f"L{L}H{h} {v:+.3f}" for L, h, v in c.top(3))
                + "]"
            )
            rw = max([4] + [len(h.spec.role) for h in c.heads])
            lines.append(f"  {'head':<7} {'role':<{rw}} {'score':>9} {'rank':>5}  {'expect':<28} result")
            for h in c.heads:
                exp = ", ".join(str(e) for e in h.spec.expect)
                res = "pass" if h.passed else "FAIL (" + ", ".join(str(e) for e in h.failed) + ")"
                lines.append(f"  {h.spec.label:<7} {h.spec.role:<{rw}} {h.score:>9.4f} {h.rank:>5}  {exp:<28} {res}")
        n = sum(len(c.heads) for c in self.checks)
        ok = sum(h.passed for c in self.checks for h in c.heads)
        lines.append(f"{self.status} ({ok}/{n} heads) in {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.where,
            "name": self.spec.name,
            "model": self.spec.model,
            "status": self.status,
            "skipped": self.skipped,
            "checks": [
                {
                    "method": c.check.method,
                    "options": c.check.options,
                    "passed": c.passed,
                    "seconds": c.seconds,
                    "heads": [
                        {
                            "head": h.spec.label,
                            "role": h.spec.role,
                            "score": h.score,
                            "rank": h.rank,
                            "expect": [str(e) for e in h.spec.expect],
                            "passed": h.passed,
                        }
                        for h in c.heads
                    ],
                }
                for c in self.checks
            ],
        }


def ranks_by_abs(scores: Float[Tensor, " layer head"]) -> Tensor:
    """``[layer, head]`` ranks by ``|score|``: 1 + the number of heads with a strictly larger
    magnitude (ties share a rank; NaN, e.g. an unpatched layer, ranks last)."""
    a = torch.nan_to_num(scores.abs().float(), nan=-1.0)
    flat = a.flatten()
    return (1 + (flat[None, :] > flat[:, None]).sum(1)).reshape(scores.shape)


def _as_layer_head(out: HeadResult | Tensor, model, check: CheckSpec) -> tuple[Tensor, dict]:
    if isinstance(out, HeadResult):
        info = dict(out.info)
        s = out.by_head() if "head" in out.axes else None
        if s is None:
            raise HeadscopeError(
                f"method {check.method!r} returned scores with axes {out.axes}; a circuit check needs (layer, head)"
            )
    else:
        info, s = {}, torch.as_tensor(out)
    if tuple(s.shape) != (model.n_layers, model.n_heads):
        raise HeadscopeError(
            f"method {check.method!r} returned scores of shape {tuple(s.shape)}; expected [layer, head] = "
            f"{(model.n_layers, model.n_heads)}"
        )
    return s.detach().float().cpu(), info


def run_check(model, check: CheckSpec) -> CheckReport:
    """Run one analysis on ``model`` and judge its heads."""
    for h in check.heads:
        if not (0 <= h.layer < model.n_layers and 0 <= h.head < model.n_heads):
            raise HeadscopeError(
                f"{check.circuit.where}: head {h.label} does not exist in {getattr(model, 'name', 'the model')} "
                f"({model.n_layers} layers x {model.n_heads} heads)"
            )
    t0 = time.perf_counter()
    scores, info = _as_layer_head(METHODS[check.method](model, check), model, check)
    ranks = ranks_by_abs(scores)
    heads = []
    for h in check.heads:
        sc, rk = float(scores[h.layer, h.head]), int(ranks[h.layer, h.head])
        heads.append(HeadCheck(h, sc, rk, [e for e in h.expect if not e.holds(rk, sc)]))
    return CheckReport(check, scores, heads, time.perf_counter() - t0, info)


def weights_available(model: str) -> tuple[bool, str]:
    """Whether ``model`` loads without a network: a folder, a bundled organism, or a hub id
    whose config and weights are in the local Hugging Face cache. Returns (ok, reason)."""
    from headscope.paths import ORGANISMS

    if model.startswith(("tracr-", "tracr:")) or model in ORGANISMS or Path(model).expanduser().is_dir():
        return True, ""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False, "huggingface_hub is not installed"
    cfg = try_to_load_from_cache(model, "config.json")
    has_w = any(
        isinstance(try_to_load_from_cache(model, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )
    if isinstance(cfg, str) and has_w:
        return True, ""
    return (
        False,
        f"weights of {model!r} are not in the local Hugging Face cache (no network here); run once where the hub is reachable",
    )


_MODELS: dict[tuple[str, str, str], Any] = {}


def _get_model(spec: CircuitSpec, reuse: bool):
    from headscope.loading import load_model

    key = (spec.model, spec.backend, spec.device)
    if reuse and key in _MODELS:
        return _MODELS[key]
    model = load_model(spec.model, backend=spec.backend, device=spec.device)
    if reuse:
        _MODELS[key] = model
    return model


def check(spec: str | Path | CircuitSpec, model=None, reuse_models: bool = True) -> CircuitReport:
    """Rerun every analysis of a circuit spec and judge each expected head.

    Args:
        spec: a spec file path or a parsed :class:`CircuitSpec`.
        model: a HeadModel to use instead of loading ``spec.model``.
        reuse_models: keep loaded models in a per-process cache keyed by (model,
            backend, device), so that several specs on one model load it once.
            Analyses leave no intervention behind (every patch is removed on exit).

    Returns:
        A :class:`CircuitReport`; ``.passed`` is False when any head misses an
        expectation, ``.skipped`` says why a ``needs_weights`` spec did not run.
    """
    spec = spec if isinstance(spec, CircuitSpec) else load_spec(spec)
    t0 = time.perf_counter()
    if model is None and spec.needs_weights:
        ok, why = weights_available(spec.model)
        if not ok:
            return CircuitReport(spec, skipped=why)
    model = model if model is not None else _get_model(spec, reuse_models)
    reports = [run_check(model, c) for c in spec.checks]
    return CircuitReport(spec, reports, None, time.perf_counter() - t0)


def assert_circuit(spec: str | Path | CircuitSpec, model=None) -> CircuitReport:
    """pytest helper: check the spec, skip (with the reason) when it needs absent weights,
    and fail with the whole report table when any head drifted::

        from headscope.circuits import assert_circuit

        def test_induction_circuit():
            assert_circuit("tests/circuits/induction.toml")
    """
    report = check(spec, model=model)
    if report.skipped:
        import pytest

        pytest.skip(report.skipped)
    if not report.passed:
        raise AssertionError("circuit drifted:\n" + report.table())
    return report


def find_specs(paths: Sequence[str | Path]) -> list[Path]:
    """Spec files from files and folders (a folder contributes its ``*.toml``, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise HeadscopeError(f"{p} holds no .toml circuit specs")
            out.extend(found)
        else:
            out.append(p)
    return out
