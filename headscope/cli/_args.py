"""Arguments every ``headscope`` command shares, declared once.

``add_model_args`` declares ``--model``, ``--backend`` and ``--device`` with one default
each; ``parse_heads`` reads the one head syntax (``L2H7`` or ``2.7``, comma-separated);
``csv`` / ``ints`` read comma lists. Every parse error is a HeadscopeError, which the
CLI prints as one line with exit status 2.

Outputs: ``add_output_args`` declares ``--out`` (a folder, checked while the arguments
are parsed, so before any model loads: an existing file or an unwritable place is a
one-line error with exit status 2) and ``--run-id``; :func:`run_stem` names a run's files
after the model (:func:`model_slug`), task, backend, mode or site, seed and run id, so a
rerun with another seed or backend writes beside the first instead of over it;
:func:`out_dir_arg` / :func:`out_file_arg` are the argparse types of output folders and
files for commands with their own ``--out``/``--json``.

This module imports neither torch nor the result classes, so that building the parser
stays cheap (``headscope --help``).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from headscope.common.errors import HeadscopeError

if TYPE_CHECKING:
    from headscope.results import Head

DEFAULT_MODEL = "llama"
"""The default organism: organism v3, training seed 0 (docs/organism_v3.md)."""
PAPER_MODEL = "llama-v2"
"""Default of the paper commands (``arith``, ``sac``, ``spt``), whose results tables were
measured on organism v2. ``arith prompts|identify|knockout|transfer`` and ``sac`` also take
organism v3 (``--model llama``) and then use its prompt sets, as does ``spt identify``;
``arith inspect|tune`` and the other ``spt`` steps have organism v2's only (organism v3's SPT
run: experiments/spt_v3_table.py)."""
DEFAULT_BACKEND = "tl"
BACKENDS = ("tl", "nnsight")


def add_model_args(
    p: argparse.ArgumentParser, device: bool = True, default: str = DEFAULT_MODEL, world: str | None = None
) -> None:
    """``--model`` [``default``: llama], ``--backend`` [tl] and (with ``device``) ``--device`` [auto].

    ``world`` (``"v2"``): the command's built-in prompt sets are written in that organism
    world's vocabulary; :func:`check_model_world` refuses a bundled organism of another."""
    p.add_argument(
        "--model",
        default=default,
        help="bundled organism (llama = organism v3 seed 0, llama-v3-s1/-s2, llama-v2, induction, tracr-NAME), "
        f"local Hugging Face folder or hub id [{default}]",
    )
    p.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help=f"TransformerLens bridge (tl) or nnsight [{DEFAULT_BACKEND}]",
    )
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu, cuda... [auto]")
    p.add_argument(
        "--allow-unk",
        action="store_true",
        help="analyse prompts with words outside the model's vocabulary (default: an error naming them)",
    )
    p.add_argument(
        "--remote",
        default=None,
        metavar="WHERE",
        help="with --backend nnsight: run every trace remotely, one session per sweep: ndif (key from NDIF_API_KEY), "
        "a host URL, or local (nnsight's local simulation of a remote job); docs/scale.md [off]",
    )
    # main() resolves --model before heavy imports, only for commands declared here (the
    # companions' --model options name their own models, not HeadModels).
    p.set_defaults(_headmodel=True, _world=world)


def is_organism_v3(args) -> bool:
    """Whether ``--model`` names a bundled organism v3 (``llama``, ``llama-v3*``) or a folder holding one:
    the paper commands that have organism-v3 prompt sets then use them."""
    from headscope.paths import organism_generation

    return isinstance(args.model, str) and organism_generation(args.model) == "v3"


def check_model_world(args) -> None:
    """HeadscopeError when a command with built-in organism-v2 prompt sets is given organism v3.

    Organism v3's byte-level tokenizer reads any text, so v2 prompts would run on it and
    give meaningless numbers. Own data (``--data`` / ``--rows``) is not checked."""
    world = getattr(args, "_world", None)
    model = getattr(args, "model", None)
    if world is None or not isinstance(model, str) or getattr(args, "data", None) or getattr(args, "rows", None):
        return
    from headscope.paths import organism_generation

    gen = organism_generation(model)
    if gen is not None and gen != world:
        raise HeadscopeError(
            f"this command's built-in prompt sets are written in organism {world}'s vocabulary, but --model {model} "
            f"is organism {gen}; use --model llama-{world} (the default here) or your own data (--data/--rows); "
            "on organism v3 use `headscope arith prompts|identify|knockout|transfer`, `headscope sac`, "
            "`headscope spt identify`, or experiments/arith_v3_table.py and spt_v3_table.py"
        )


def model_from_args(args):
    """The HeadModel named by ``--model/--backend/--device/--allow-unk``."""
    from headscope.loading import load_model

    return load_model(
        args.model,
        backend=args.backend,
        device=getattr(args, "device", "auto"),
        allow_unk=bool(getattr(args, "allow_unk", False)),
        remote=getattr(args, "remote", None),
    )


def add_task_args(p: argparse.ArgumentParser, n_default: int) -> None:
    """``--task``, ``--prompts FILE`` and ``-n/--n-prompts`` (read by :func:`task_from_args`)."""
    p.add_argument(
        "--task",
        default=None,
        help="arithmetic, facts or induction; on organism v3 (llama, llama-v3*) arithmetic is its held-out "
        "arithmetic_v3 and facts is not available [arithmetic; induction for --model induction]",
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="your own pairs instead of --task: JSON Lines (.jsonl), CSV (.csv) or a datasets folder (save_to_disk) "
        "with columns clean, corrupt, answer, wrong",
    )
    p.add_argument("-n", "--n-prompts", type=int, default=n_default, help=f"number of prompt pairs [{n_default}]")
    p.add_argument(
        "--answer-tokens",
        default="single",
        choices=("single", "first"),
        help="single: every answer must be one token; first: score multi-token answers by their first token [single]",
    )


def add_output_args(p: argparse.ArgumentParser, out: str, top: bool = True, png: bool = True) -> None:
    """``--out`` (folder, validated), ``--run-id``, ``--seed`` and optionally ``--top`` (table rows) and ``--png``."""
    if top:
        p.add_argument("--top", type=int, default=10, help="rows of the top-heads table [10]")
    p.add_argument(
        "--out",
        default=out,
        type=out_dir_arg,
        help=f"output folder [{out}]; file names carry model, task, backend, mode, seed and --run-id",
    )
    p.add_argument("--run-id", default=None, help="label added to every output file name (e.g. an experiment name)")
    if png:
        p.add_argument("--png", action="store_true", help="also write PNG figures (needs kaleido + chromium)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt sample [0]")


def _bad_output(what: str, text: str) -> HeadscopeError:
    return HeadscopeError(f"{what}: {text}" if what else text)


def _writable_place(path: Path, what: str) -> None:
    """HeadscopeError unless ``path``'s nearest existing folder (itself or an ancestor) is writable."""
    parent = path
    while not parent.exists():
        if parent.is_symlink():
            raise _bad_output(what, f"{parent} is a broken symbolic link; remove it or choose another place")
        parent = parent.parent
    if parent != path and not parent.is_dir():
        raise _bad_output(what, f"{parent} is a file, so {path} cannot be created; choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _bad_output(what, f"no permission to write in {parent}; choose another place")


def check_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an output folder: an existing folder or a new one in a writable place (nothing is created)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _bad_output(what, f"{p} is an existing file, not a folder; give a new or existing folder")
    _writable_place(p, what)
    return p


def check_out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an output file (or file prefix): not an existing folder, in a writable place."""
    p = Path(path)
    if p.is_dir():
        raise _bad_output(what, f"{p} is a folder; give a file name")
    _writable_place(p, what)
    return p


def _arg_type(check):
    def convert(value: str) -> str:
        try:
            check(value, "")
        except HeadscopeError as e:
            raise argparse.ArgumentTypeError(str(e).strip()) from e
        return value

    convert.__name__ = check.__name__
    return convert


#: argparse ``type=`` of an output folder / file: checked while parsing, before anything runs.
out_dir_arg = _arg_type(check_out_dir)
out_file_arg = _arg_type(check_out_file)


def slug(text: str) -> str:
    """``text`` as one file-name field: runs of characters other than letters, digits, ``+-`` become ``-``.

    No dots, so that ``Path.with_suffix`` of a stem never cuts into a name like ``Qwen2-0.5B``.
    """
    return re.sub(r"[^A-Za-z0-9+-]+", "-", text).strip("-") or "x"


def model_slug(model: str) -> str:
    """A readable file-name form of ``--model``: a local folder's last name, a hub id's ``org--name``."""
    p = Path(model).expanduser()
    if p.exists() or model.startswith((".", "/", "~")):
        name = p.resolve().name or p.name
    else:
        name = "--".join(part for part in model.split("/") if part)
    return slug(name)


def run_stem(args: argparse.Namespace, *fields: object) -> str:
    """The file stem of one run: model, ``fields`` (task, mode, site...), backend, seed and ``--run-id``.

    ``run_stem(args, "arithmetic", "heads", "denoise")`` with ``--model data/models/llama``
    → ``llama_arithmetic_heads_denoise_tl_seed0``. Each field is :func:`slug`-ged; fields
    that are None or empty are left out.
    """
    parts = [model_slug(args.model), *(slug(str(f)) for f in fields if f not in (None, ""))]
    if getattr(args, "backend", None):
        parts.append(slug(args.backend))
    if getattr(args, "seed", None) is not None:
        parts.append(f"seed{args.seed}")
    if getattr(args, "run_id", None):
        parts.append(slug(args.run_id))
    return "_".join(parts)


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
    from headscope.results import parse_head

    if s is None:
        return None
    heads = [parse_head(part, what) for part in csv(s)]
    if not heads:
        raise HeadscopeError(f"{what} is empty; give heads such as 2.7,L4H0")
    return heads


def task_from_args(args):
    """The task of ``--prompts FILE`` or ``--task NAME`` (``-n``, ``--seed``), validated before any model loads."""
    from headscope.tasks import get_task

    if args.prompts:
        from headscope.tasks.base import load_pairs

        return load_pairs(args.prompts)
    from headscope.paths import organism_generation
    from headscope.tasks.base import V3_TASK_NAMES

    model = getattr(args, "model", None)
    name = args.task or ("induction" if model == "induction" else "arithmetic")
    if model is not None and organism_generation(model) == "v3":
        name = V3_TASK_NAMES.get(name, name)  # organism v3's own arithmetic (held-out operand pairs)
    if args.n_prompts < 1:
        raise HeadscopeError(f"--n-prompts must be >= 1, got {args.n_prompts}")
    return get_task(name, n=args.n_prompts, seed=args.seed)
