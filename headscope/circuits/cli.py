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
    _register_discovery(csub)
    c.set_defaults(func=lambda args: (c.print_help(), 2)[1])


def _register_discovery(csub) -> None:
    from headscope.cli._args import add_model_args, add_output_args, add_task_args

    d = csub.add_parser(
        "discover",
        help="score every edge (EAP, EAP-IG or exact edge patching), pick a circuit, measure its faithfulness",
        description=(
            "Score every edge of the head-level graph on a task's clean/corrupt pairs (EAP: 2 forwards + 1 "
            "backward; EAP-IG: --steps gradient runs; exact: one patched copy per edge), pick the --top strongest "
            "edges (or grow them greedily from the logits), measure the faithfulness curve (MIB: CPR, CMD) and, "
            "with --truth, edge-recovery AUROC. Writes the scores, the circuit (edges JSON), the curve and an HTML "
            "graph to --out. See docs/circuits.md, 'Circuit discovery'."
        ),
    )
    add_model_args(d)
    add_task_args(d, 24)
    _discovery_args(d)
    d.add_argument(
        "--method",
        default="eap-ig",
        choices=("eap", "eap-ig", "eap-ig-activations", "exact"),
        help="edge scores [eap-ig: its inputs variant]",
    )
    d.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps [5]")
    d.add_argument("--how", default="top", choices=("top", "greedy"), help="circuit from scores [top]")
    d.add_argument("--edges", type=int, default=20, help="circuit size in edges [20]")
    d.add_argument("--truth", default=None, metavar="FILE", help="a known circuit (edges JSON): report AUROC")
    add_output_args(d, "out/circuits", png=False)
    d.set_defaults(func=cmd_circuits_discover)

    s = csub.add_parser(
        "score",
        help="faithfulness of a given circuit (edges JSON) on a task",
        description="Ablate every edge outside the circuit in FILE (written by 'circuits discover' or by hand: "
        '{"graph": {...}, "edges": ["a0.h1->a1.h2<k>", ...]}) and print its faithfulness (MIB).',
    )
    s.add_argument("circuit", metavar="FILE", help="edges JSON")
    add_model_args(s)
    add_task_args(s, 24)
    _discovery_args(s)
    s.add_argument("--seed", type=int, default=0, help="seed of the task's prompts [0]")
    s.set_defaults(func=cmd_circuits_score)


def _discovery_args(p) -> None:
    p.add_argument(
        "--ablation", default="corrupt", choices=("corrupt", "mean"), help="what ablated edges carry [corrupt]"
    )


def _task_batch(args):
    from headscope.cli._args import model_from_args, task_from_args

    task = task_from_args(args)
    model = model_from_args(args)
    return model, task.prepare(model)


def cmd_circuits_discover(args) -> int:
    from pathlib import Path

    from headscope.cli._args import run_stem
    from headscope.common.errors import HeadscopeError
    from headscope.common.plotting import save_figure
    from headscope.eap import edge_attribution, edge_scores_table
    from headscope.faithfulness import MIB_FRACTIONS, Ablator, edge_auroc, greedy_edges
    from headscope.graph import load_edges, save_edges
    from headscope.viz import circuit_graph

    truth = None
    if args.truth:
        if not Path(args.truth).is_file():
            raise HeadscopeError(f"--truth {args.truth!r} is not a file; give an edges JSON (docs/circuits.md)")
        truth = load_edges(args.truth)[1]
    if args.edges < 1:
        raise HeadscopeError("--edges must be at least 1")
    model, batch = _task_batch(args)
    metric = batch.metric_fn()
    scores = edge_attribution(model, batch.clean, batch.corrupt, metric, method=args.method, steps=args.steps)
    circuit = scores.top(args.edges) if args.how == "top" else greedy_edges(scores, args.edges)
    ab = Ablator(model, batch.clean, batch.corrupt, metric, ablation=args.ablation)
    curve = ab.curve(scores, MIB_FRACTIONS, how=args.how)
    faith = ab.faithfulness(circuit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / run_stem(args, batch.name, "edges", args.method)
    report = {
        "info": scores.info,
        "circuit": circuit,
        "faithfulness": faith,
        "curve": curve,
        "scores": scores.as_dict(),
    }
    if truth is not None:
        report["auroc"] = edge_auroc(scores, truth)["auroc"]
    write_json(f"{stem}.json", report)
    save_edges(f"{stem}_circuit.json", scores.graph, circuit, {"method": args.method, "how": args.how})
    files = save_figure(circuit_graph(scores, circuit, title=f"{batch.name}: {args.method} circuit"), stem)
    print(edge_scores_table(scores, args.top))
    print(
        f"circuit of {len(circuit)} edges ({args.how}): faithfulness {faith:.3f}; curve CPR {curve['cpr']:.3f}, "
        f"CMD {curve['cmd']:.3f} ({args.ablation} ablation)"
    )
    if truth is not None:
        print(f"edge recovery against {args.truth}: AUROC {report['auroc']:.3f}")
    for f in [f"{stem}.json", f"{stem}_circuit.json", *files]:
        print(f"wrote {f}")
    return 0


def cmd_circuits_score(args) -> int:
    from pathlib import Path

    from headscope.common.errors import HeadscopeError
    from headscope.faithfulness import Ablator
    from headscope.graph import HeadGraph, load_edges

    if not Path(args.circuit).is_file():
        raise HeadscopeError(f"{args.circuit!r} is not a file; give an edges JSON (headscope circuits discover)")
    graph, edges = load_edges(args.circuit)
    model, batch = _task_batch(args)
    if HeadGraph.from_model(model) != graph:
        raise HeadscopeError(f"{args.circuit} was written for another model shape ({graph.to_dict()})")
    ab = Ablator(model, batch.clean, batch.corrupt, batch.metric_fn(), ablation=args.ablation)
    f = ab.faithfulness(edges)
    print(
        f"{len(edges)} of {int(graph.mask.sum())} edges; metric clean {ab.m_clean:.4f}, all ablated "
        f"{ab.m_empty:.4f}, circuit {ab.metric(edges):.4f}: faithfulness {f:.3f} ({args.ablation} ablation)"
    )
    return 0


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
