"""Circuit spec files: the TOML format, its parser and the spec objects.

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
    known_failure = "..."          # optional: a recorded finding, the spec is known to fail (why)

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
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headscope.common.errors import HeadscopeError
from headscope.results import parse_head

if TYPE_CHECKING:
    from torch import Tensor

    from headscope.results import HeadResult

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


MethodFn = Callable[[Any, "CheckSpec"], "HeadResult | Tensor"]
METHODS: dict[str, MethodFn] = {}


def register_method(name: str, fn: MethodFn | None = None):
    """Register ``fn(model, check) -> HeadResult | Tensor[layer, head]`` under ``name``
    (usable as a decorator). ``check.opt(key)`` reads options; ``check.make_task()`` the task."""
    if fn is None:
        return lambda f: register_method(name, f)
    METHODS[name] = fn
    return fn


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
                f"{where}: cannot read the expectation {text!r}; write e.g. 'rank <= 5', 'score >= 0.7' or '|score| "
                "<= 0.05'"
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
    known_failure: str | None = None

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
_TOP_KEYS = {
    "name",
    "description",
    "model",
    "backend",
    "device",
    "needs_weights",
    "known_failure",
    "task",
    "check",
    "method",
    "heads",
}


def _known_failure(raw: Any, where: str) -> str | None:
    """``known_failure``: why the spec is known to fail (a finding kept on record; the check
    still runs and still reports FAIL; pytest marks it a strict xfail, so a pass is noticed)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise HeadscopeError(f"{where}: known_failure must be a non-empty string saying why the spec fails")
    return raw


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
            f"{where}: missing key 'model' (a bundled organism such as 'induction', a folder, a hub id or "
            "'tracr:NAME')"
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
        _known_failure(raw.get("known_failure"), where),
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
