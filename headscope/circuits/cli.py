"""``headscope circuits check SPEC...``: rerun known-circuit specs and report drift.

Exit status: 0 when every spec passes (or is skipped for absent weights), 1 when any
head misses an expectation (drift), 2 on a bad spec (the CLI prints one line naming the
file, the key and the fix). Every spec is parsed before any model is loaded, so a typo
in the last file fails fast.
"""

from __future__ import annotations

import sys

from headscope.cli._args import out_file_arg
from headscope.common.io import write_json
from headscope.common.progress import progress


def register(sub) -> None:
    """Add the ``circuits`` group to the ``headscope`` subparsers."""
    c = sub.add_parser(
        "circuits",
        help="known-circuit regression specs",
        description="Check known circuits (TOML specs) against a model.",
    )
    csub = c.add_subparsers(dest="circuits_cmd", metavar="ACTION")
    k = csub.add_parser(
        "check",
        help="rerun the analyses of circuit specs; exit 1 on drift",
        description=(
            "Rerun every analysis named in each circuit spec (TOML) and report, per expected head, the measured "
            "score, its rank by |score| and pass/fail. Exit 0: all pass; 1: a head drifted; 2: a bad spec. "
            "A folder stands for its *.toml files. See docs/circuits.md for the format."
        ),
    )
    k.add_argument("specs", nargs="+", metavar="SPEC", help="circuit spec files (.toml) or folders of them")
    k.add_argument("--json", default=None, metavar="FILE", type=out_file_arg, help="also write every report as JSON")
    k.add_argument("--device", default=None, help="override the specs' device (cpu, cuda, auto)")
    k.set_defaults(func=cmd_circuits_check)
    c.set_defaults(func=lambda args: (c.print_help(), 2)[1])


def cmd_circuits_check(args) -> int:
    from headscope.circuits import check, find_specs, load_spec

    specs = [load_spec(p) for p in find_specs(args.specs)]  # all parsed before anything runs
    if args.device:
        for s in specs:
            s.device = args.device
    reports = []
    for s in progress(specs, desc="circuits check", unit="spec"):
        r = check(s)
        reports.append(r)
        print(r.table())
        print()
    n_fail = sum(r.status == "FAIL" for r in reports)
    n_skip = sum(r.status == "SKIP" for r in reports)
    print(f"{len(reports) - n_fail - n_skip} passed, {n_fail} failed, {n_skip} skipped")
    if args.json:
        write_json(args.json, [r.to_dict() for r in reports])
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if n_fail else 0
