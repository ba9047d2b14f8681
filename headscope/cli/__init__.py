"""The ``headscope`` command line: one parser, one error policy, one registration mechanism.

Every command group is a module with ``register(subparsers)``, listed in
:data:`COMMANDS` (the core and paper groups) or :data:`COMPANIONS` (the companion
packages, skipped when not installed). Shared arguments come from
:mod:`headscope.cli._args`. Every subcommand turns a HeadscopeError (or any ValueError
from bad input) into one line on stderr and exit status 2; no traceback reaches the user
for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from headscope.common.errors import HeadscopeError

# Command groups in the order `headscope --help` lists them. Each module imports its
# heavy dependencies inside the command functions, so building the parser stays cheap.
COMMANDS = (
    "headscope.cli.patch",
    "headscope.cli.analysis",
    "headscope.circuits.cli",
    "headscope.papers.arithmetic.cli",
    "headscope.papers.spt.cli",
    "headscope.papers.sac.cli",
    "headscope.organisms.cli",
)
# Companion packages: registered when importable (a slim install may lack them).
COMPANIONS = ("vision.cli", "federated.cli", "generative.cli")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="headscope",
        description="Attention-head interpretability: patching, attribution, steering and tuning of heads.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMANDS:
        importlib.import_module(mod_name).register(sub)
    for mod_name in COMPANIONS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        register: Callable | None = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except HeadscopeError as e:
        print(f"headscope: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("HEADSCOPE_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        print(f"headscope: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headscope: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
