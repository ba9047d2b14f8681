"""The ``headscope`` command line: one parser, one error policy, one registration mechanism.

Every command group is a module with ``register(subparsers)``, listed in
:data:`COMMANDS` (the core and paper groups) or :data:`COMPANIONS` (the companion
packages, skipped when not installed) with the top-level commands it registers and the
line ``headscope --help`` shows for each. Only the module of the command being run is
imported: ``headscope --help`` lists the commands from these tables alone, so that it
loads neither torch nor any paper package (``tests/headscope/test_cli_outputs.py``
checks that every module registers exactly the commands and help lines listed here).
Shared arguments come from :mod:`headscope.cli._args`. Every subcommand turns a
HeadscopeError (or any ValueError from bad input) into one line on stderr and exit
status 2; no traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from headscope.common.errors import HeadscopeError

# module → {command: help line}, in the order `headscope --help` lists them.
COMMANDS: dict[str, dict[str, str]] = {
    "headscope.cli.patch": {
        "patch": "activation-patching sweep over every attention head",
        "models": "list the bundled model organisms; --check: which architectures and analyses work",
    },
    "headscope.cli.analysis": {
        "attribute": "head attribution: attribution patching, DLA or ablation knockout",
        "path-patch": "path patching from every head to the logits or to a receiver head",
        "heads": "head scores: induction, previous-token, duplicate-token",
    },
    "headscope.circuits.cli": {"circuits": "known-circuit regression specs"},
    "headscope.papers.arithmetic.cli": {
        "arith": "arithmetic heads: identify, knock out, inspect, transfer, tune (ICML 2024 paper)"
    },
    "headscope.papers.spt.cli": {"spt": "Supervised Pinpoint Tuning: find the sycophancy heads and tune only them"},
    "headscope.papers.sac.cli": {
        "sac": "Sparse Activation Control: identify, fit, apply and evaluate head controllers",
        "steer": "generate with steering controllers active (same as `sac apply`)",
    },
    "headscope.organisms.cli": {"organism": "train, evaluate or export a bundled model organism"},
}
# Companion packages: listed when their top-level package is installed (a slim install may lack them).
COMPANIONS: dict[str, dict[str, str]] = {
    "vision.cli": {"vision": "SpectralKAN, LSNet and OOD detection (vision papers)"},
    "federated.cli": {"fl": "one-shot federated learning: FuseFL, Co-Boosting and baselines (Flower)"},
    "generative.cli": {"gen": "diffusion image interpolation: NoiseDiffusion, slerp, noise (generative/)"},
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def version() -> str:
    """The installed distribution's version, else ``headscope.__version__`` (a source checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("headscope")
    except PackageNotFoundError:
        from headscope import __version__

        return __version__


def _installed(mod_name: str) -> bool:
    """Whether the companion's top-level package can be imported (found without importing it)."""
    return importlib.util.find_spec(mod_name.split(".")[0]) is not None


def _groups() -> list[tuple[str, dict[str, str]]]:
    return list(COMMANDS.items()) + [(m, c) for m, c in COMPANIONS.items() if _installed(m)]


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: the first word that is not an option (the top level has no valued options)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``headscope`` parser.

    With ``argv``, only the module of the command it names is imported (the other
    commands are listed with their help line and no arguments); without, every module
    registers its commands.
    """
    parser = _Parser(
        prog="headscope",
        description="Attention-head interpretability: patching, attribution, steering and tuning of heads.",
    )
    parser.add_argument("--version", action="version", version=f"headscope {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = _command_of(argv) if argv is not None else None
    for mod_name, commands in _groups():
        if argv is None or wanted in commands:
            register: Callable = importlib.import_module(mod_name).register
            register(sub)
        else:
            for name, help_line in commands.items():
                sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "_headmodel", False) and isinstance(getattr(args, "model", None), str):
            from headscope.names import resolve_model_name

            resolve_model_name(args.model)  # a typo fails here, before torch loads
            from headscope.cli._args import check_model_world

            check_model_world(args)
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
