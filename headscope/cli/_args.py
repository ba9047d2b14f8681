"""Arguments every ``headscope`` command shares, declared once.

``add_model_args`` declares ``--model``, ``--backend`` and ``--device`` with one default
each; ``parse_heads`` reads the one head syntax (``L2H7`` or ``2.7``, comma-separated);
``csv`` / ``ints`` read comma lists. Every parse error is a HeadscopeError, which the
CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse

from headscope.common.errors import HeadscopeError
from headscope.results import Head, parse_head

DEFAULT_MODEL = "llama"
DEFAULT_BACKEND = "tl"
BACKENDS = ("tl", "nnsight")


def add_model_args(p: argparse.ArgumentParser, device: bool = True) -> None:
    """``--model`` [llama], ``--backend`` [tl] and (with ``device``) ``--device`` [auto]."""
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled organism (llama, induction, tracr-NAME), local Hugging Face folder or hub id [{DEFAULT_MODEL}]",
    )
    p.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help=f"TransformerLens bridge (tl) or nnsight [{DEFAULT_BACKEND}]",
    )
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu, cuda... [auto]")


def add_task_args(p: argparse.ArgumentParser, n_default: int) -> None:
    """``--task``, ``--prompts FILE`` and ``-n/--n-prompts`` (read by :func:`task_from_args`)."""
    p.add_argument(
        "--task", default=None, help="arithmetic, facts or induction [arithmetic; induction for --model induction]"
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="your own pairs instead of --task: JSON Lines with clean, corrupt, answer, wrong",
    )
    p.add_argument("-n", "--n-prompts", type=int, default=n_default, help=f"number of prompt pairs [{n_default}]")


def add_output_args(p: argparse.ArgumentParser, out: str, top: bool = True, png: bool = True) -> None:
    """``--out`` (folder), and optionally ``--top`` (table rows), ``--png`` and ``--seed``."""
    if top:
        p.add_argument("--top", type=int, default=10, help="rows of the top-heads table [10]")
    p.add_argument("--out", default=out, help=f"output folder [{out}]")
    if png:
        p.add_argument("--png", action="store_true", help="also write PNG figures (needs kaleido + chromium)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt sample [0]")


def csv(s: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [x.strip() for x in s.split(",") if x.strip()]


def ints(s: str, what: str) -> list[int]:
    """Comma-separated integers; ``what`` names the option in the error."""
    try:
        return [int(x) for x in csv(s)]
    except ValueError as e:
        raise HeadscopeError(f"{what} must be comma-separated integers, got {s!r}") from e


def parse_heads(s: str | None, what: str = "--heads") -> list[Head] | None:
    """``"2.7,L4H0"`` → ``[(2, 7), (4, 0)]``; None → None; an empty list is an error."""
    if s is None:
        return None
    heads = [parse_head(part, what) for part in csv(s)]
    if not heads:
        raise HeadscopeError(f"{what} is empty; give heads such as 2.7,L4H0")
    return heads


def out_stem(model: str) -> str:
    """A file-name-safe form of a model name or path."""
    return model.replace("/", "_")


def task_from_args(args):
    """The task of ``--prompts FILE`` or ``--task NAME`` (``-n``, ``--seed``), validated before any model loads."""
    from headscope.tasks import get_task

    if args.prompts:
        from headscope.tasks.base import load_pairs

        return load_pairs(args.prompts)
    name = args.task or ("induction" if args.model == "induction" else "arithmetic")
    if args.n_prompts < 1:
        raise HeadscopeError(f"--n-prompts must be >= 1, got {args.n_prompts}")
    return get_task(name, n=args.n_prompts, seed=args.seed)
