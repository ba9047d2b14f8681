"""Circuit discovery against known circuits: EAP, EAP-IG and exact edge patching, with
TransformerLens 4.3's ``attribution_patch`` (edge granularity) as the peer where it runs.

Ground truths (protocol fixed before any score was computed):

* ``induction``: the organism's circuit in ``tests/circuits/induction.edges.json``
  (previous-token head L0H0 -> the induction heads' keys; their queries and values from the
  input; the induction heads -> logits), written from the heads that
  ``tests/circuits/induction.toml`` establishes; task ``induction``, ``--n`` pairs.
* ``llama-arith``: the ``llama`` organism's arithmetic key heads as far as
  ``tests/circuits/llama_arith_heads.toml`` establishes them
  (``tests/circuits/llama_arith_heads.edges.json``: each key head's q/k/v from the input,
  the key head to every MLP and to the logits); its task (QA style, four operators,
  template 0, seed 0), ``--n`` pairs.
* ``llama-v3-arith``: organism v3 (seed 0)'s arithmetic key heads under the operator
  corruption, L4H1 and L2H0, as far as path patching to the logits establishes them
  (``tests/circuits/llama_v3_arith_heads.edges.json``: each key head to the logits and to
  every MLP from its layer on; written before any edge score on v3); task
  ``arithmetic_v3`` (operator, ``eq/sym``, evaluate half, seed 0), ``--n`` pairs.
* every bundled tracr program (``tracr-NAME``): the program's whole computation graph read
  off its weights (``tests/circuits/tracr_NAME.edges.json``,
  ``python -m headscope.organisms.tracr_edges``). Task: ``--n`` resample pairs (seed 0):
  clean and corrupt inputs drawn independently and uniformly at the program's maximum length
  (``sort``: distinct tokens), kept when the program's outputs at the last position differ;
  metric: the logit difference at the last position between the clean and the corrupt
  output (for a numerical output, the output value itself). A true edge whose writer is
  the same on both inputs of every pair (e.g. ``reverse``'s length head: both inputs have
  the same length) is invisible to every patching-based score; such edges count against
  every method alike.

Per method: AUROC of ``|score|`` for the true edges, CPR and CMD of the top-n faithfulness
curve (MIB circuit sizes, corrupt ablation) and CPU seconds. Peer: TransformerLens's edge
scores (one pair at a time, summed over positions, denoising convention) against
headscope's EAP in the same convention (max difference; they should agree to float
rounding) and its CPU time; Spearman correlation of TransformerLens's ``|score|`` with each
headscope method's. TransformerLens 4.3 refuses its per-head hooks on native bridges
(``use_attn_result`` needs a joint-QKV or position-embedding attention bridge), so the
tracr rows have no peer. One torch thread, same process, same model and prompts.

Each AUROC, CPR and CMD has a 95% percentile-bootstrap interval over the prompt pairs
(``--boot`` resamples; every method is rescored on each resample: its scores are the mean
of the resampled pairs' own scores, computed once per pair, which equals rescoring the
resampled batch because batch rows do not interact; the JSON records the largest
difference between a batch's scores and its pairs' mean). The point estimates use the same
estimator (the mean of all pairs' scores); where they differ from the batch's (scores that
are float noise around zero rank differently), the JSON keeps the batch's as ``batch_*``.

    python benchmarks/circuit_discovery.py [--truth induction tracr-reverse ...] [--n 24] [--steps 5]
        [--boot 200] [--json docs/results/circuit_discovery.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


METHODS = ("eap", "eap-ig", "eap-ig-activations", "exact")


#: the bundled Llama organisms' ground truths: name -> edges file in tests/circuits (its
#: "model" and "task" keys say which organism and prompts)
LLAMA_TRUTHS = {"llama-arith": "llama_arith_heads.edges.json", "llama-v3-arith": "llama_v3_arith_heads.edges.json"}


def _metric(ans, wrong, numeric: bool):
    from headscope.common.metrics import logit_diff

    def metric(lg):
        return lg[:, -1, 0].mean() if numeric else logit_diff(lg, ans, wrong)

    return metric


def evaluate(model, clean, corrupt, ans, wrong, truth, steps: int, numeric: bool = False, given=None) -> dict:
    """Per method: edge scores, AUROC against ``truth``, the top-n faithfulness curve (CPR,
    CMD) and CPU seconds, on one set of prompt pairs (``numeric``: the metric is the single
    output value at the last position). ``given``: per method, scores already computed for
    these pairs (the bootstrap's means of per-pair scores); otherwise they are computed."""
    from headscope.eap import EdgeScores, edge_attribution
    from headscope.faithfulness import MIB_FRACTIONS, Ablator, edge_auroc
    from headscope.graph import HeadGraph

    metric = _metric(ans, wrong, numeric)
    ab = Ablator(model, clean, corrupt, metric)
    out = {}
    for method in METHODS:
        dt = float("nan")
        if given is None:
            t0 = time.process_time()
            s = edge_attribution(model, clean, corrupt, metric, method=method, steps=steps)
            dt = time.process_time() - t0
        else:
            s = EdgeScores(HeadGraph.from_model(model), given[method])
        curve = ab.curve(s, MIB_FRACTIONS)
        out[method] = {
            "scores": s,
            "auroc": edge_auroc(s, truth)["auroc"],
            "cpr": curve["cpr"],
            "cmd": curve["cmd"],
            "cpu_s": dt,
            "curve": curve["points"],
        }
    return out


def per_pair_scores(model, clean, corrupt, ans, wrong, steps: int, numeric: bool) -> dict:
    """Per method, every pair's own edge scores ``[n, writers, readers]``. Batch rows do not
    interact and the metric is a mean over the batch, so a batch's scores are the mean of its
    pairs' (to float rounding): a bootstrap resample's scores are the mean over its pairs."""
    from headscope.eap import edge_attribution

    out = {}
    for method in METHODS:
        out[method] = torch.stack(
            [
                edge_attribution(
                    model, clean[i : i + 1], corrupt[i : i + 1], _metric(ans[i : i + 1], wrong[i : i + 1], numeric),
                    method=method, steps=steps,
                ).scores
                for i in range(clean.shape[0])
            ]
        )  # fmt: skip
    return out


def tracr_pairs(model, n: int, seed: int = 0):
    """``n`` resample pairs of a tracr program (module docstring): clean, corrupt, answer and
    wrong output ids at the last position, and the metric."""
    import random

    tok = model.tokenizer
    vocab = [w for w in tok.vocab if w not in (tok.bos_token, tok.pad_token)]
    T = model.n_ctx - 1
    rng = random.Random(seed)

    def draw() -> list[str]:
        return rng.sample(vocab, T) if model.name == "tracr-sort" else [rng.choice(vocab) for _ in range(T)]

    clean, corrupt, ans, wrong = [], [], [], []
    numeric = model.d_vocab_out == 1
    tries = 0
    while len(clean) < n:
        tries += 1
        if tries > 100 * n:
            raise SystemExit(f"{model.name}: fewer than {n} pairs whose outputs differ at the last position")
        a, b = model.to_tokens(" ".join(draw())), model.to_tokens(" ".join(draw()))
        with torch.no_grad():
            oa, ob = model.logits(a)[0, -1], model.logits(b)[0, -1]
        ya, yb = (float(oa[0]), float(ob[0])) if numeric else (int(oa.argmax()), int(ob.argmax()))
        if abs(ya - yb) < 1e-6:
            continue
        clean.append(a[0])
        corrupt.append(b[0])
        ans.append(0 if numeric else ya)
        wrong.append(0 if numeric else yb)
    clean_t, corrupt_t = torch.stack(clean), torch.stack(corrupt)
    ans_t, wrong_t = torch.tensor(ans), torch.tensor(wrong)
    return clean_t, corrupt_t, ans_t, wrong_t, numeric


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from headscope.backends.tl import tl_edge_attribution
    from headscope.common.metrics import logit_diff
    from headscope.eap import edge_attribution
    from headscope.graph import load_edges
    from headscope.loading import load_model
    from headscope.paths import bundled_tracr
    from headscope.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--truth",
        nargs="+",
        default=None,
        help="ground truths [induction, llama-arith, llama-v3-arith, every bundled tracr-NAME]",
    )
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples of the prompt pairs [200]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    truths = args.truth or ["induction", *LLAMA_TRUTHS, *bundled_tracr()]
    print(
        f"n = {args.n} prompt pairs per ground truth; corrupt ablation; EAP-IG {args.steps} steps; 1 torch thread, "
        f"CPU seconds; [95% CI]: percentile bootstrap over the prompt pairs, {args.boot} resamples, every method "
        "rescored on each"
    )
    print()
    print("| ground truth | edges (true) | method | AUROC [95% CI] | CPR [95% CI] | CMD [95% CI] | CPU s | "
          "Spearman of |score| with TL's |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    report: dict = {"n": args.n, "n_boot": args.boot, "steps": args.steps, "truths": {}}
    peers = []
    for name in truths:
        if name == "induction":
            _, truth = load_edges(ROOT / "tests/circuits/induction.edges.json")
            model = load_model("induction", "tl")
            batch = get_task("induction", n=args.n).prepare(model)
            clean, corrupt, ans, wrong = batch.clean, batch.corrupt, batch.answer, batch.wrong
            numeric = False
        elif name in LLAMA_TRUTHS:
            path = ROOT / "tests/circuits" / LLAMA_TRUTHS[name]
            _, truth = load_edges(path)
            model = load_model(json.loads(path.read_text())["model"], "tl")
            task = dict(json.loads(path.read_text())["task"])
            batch = get_task(task.pop("name"), **task, n=args.n).prepare(model)
            clean, corrupt, ans, wrong = batch.clean, batch.corrupt, batch.answer, batch.wrong
            numeric = False
        else:
            _, truth = load_edges(ROOT / f"tests/circuits/{name.replace('-', '_')}.edges.json")
            model = load_model(name, "tl")
            clean, corrupt, ans, wrong, numeric = tracr_pairs(model, args.n)
        full = evaluate(model, clean, corrupt, ans, wrong, truth, args.steps, numeric)
        # Percentile bootstrap over prompt pairs: every method rescored on each resample.
        rng = np.random.default_rng(0)
        boot: dict[str, dict[str, list[float]]] = {m: {"auroc": [], "cpr": [], "cmd": []} for m in METHODS}
        pairs = per_pair_scores(model, clean, corrupt, ans, wrong, args.steps, numeric)
        check = max(float((pairs[m].mean(0) - full[m]["scores"].scores).nan_to_num().abs().max()) for m in METHODS)
        # The point estimate uses the bootstrap's own estimator (the mean of the pairs'
        # scores), so that it and its interval agree where near-zero scores are float noise
        # (saturated softmax: gradients of order 1e-5); the batch's values are kept in the JSON.
        batch = full
        full = evaluate(model, clean, corrupt, ans, wrong, truth, args.steps, numeric,
                        {m: pairs[m].mean(0) for m in METHODS})  # fmt: skip
        for m in METHODS:
            full[m]["cpu_s"] = batch[m]["cpu_s"]
        for _ in range(args.boot):
            idx = torch.as_tensor(rng.integers(0, clean.shape[0], clean.shape[0]))
            given = {m: pairs[m][idx].mean(0) for m in METHODS}
            res = evaluate(model, clean[idx], corrupt[idx], ans[idx], wrong[idx], truth, args.steps, numeric, given)
            for m in METHODS:
                for k in ("auroc", "cpr", "cmd"):
                    boot[m][k].append(res[m][k])

        def ci(m: str, k: str, boot=boot) -> list[float]:
            return [float(np.percentile(boot[m][k], 2.5)), float(np.percentile(boot[m][k], 97.5))]

        corr: dict[str, float | None] = {m: None for m in METHODS}
        peer = None
        if not name.startswith("tracr-"):  # TransformerLens's edge hooks need an HF-backed bridge
            t0 = time.process_time()
            tl = tl_edge_attribution(model, clean, corrupt, ans, wrong)
            t_tl = time.process_time() - t0
            t0 = time.process_time()
            den = edge_attribution(model, clean, corrupt, lambda lg: logit_diff(lg, ans, wrong), direction="denoise")
            t_den = time.process_time() - t0
            names = sorted(tl)
            diff = max(abs(den.edge(e) - tl[e]) for e in names)
            tl_abs = [abs(tl[e]) for e in names]
            corr = {m: float(spearmanr(tl_abs, [abs(r["scores"].edge(e)) for e in names]).statistic)
                    for m, r in full.items()}  # fmt: skip
            peer = {"tl_cpu_s": t_tl, "headscope_cpu_s": t_den, "max_diff": diff}
            peers.append((name, peer))
        n_edges = int(full["eap"]["scores"].graph.mask.sum())
        rows = []
        for m in METHODS:
            r = full[m]
            label = m + (f" ({args.steps} steps)" if m.startswith("eap-ig") else "")
            cells = " | ".join(f"{r[k]:.3f} [{ci(m, k)[0]:.3f}, {ci(m, k)[1]:.3f}]" for k in ("auroc", "cpr", "cmd"))
            sp = "n/a (TL refuses native bridges)" if corr[m] is None else f"{corr[m]:+.3f}"
            print(f"| {name} | {n_edges} ({len(truth)}) | {label} | {cells} | {r['cpu_s']:.2f} | {sp} |")
            rows.append({"method": label, **{k: r[k] for k in ("auroc", "cpr", "cmd", "cpu_s", "curve")},
                         **{f"batch_{k}": batch[m][k] for k in ("auroc", "cpr", "cmd")},
                         **{f"{k}_ci95": ci(m, k) for k in ("auroc", "cpr", "cmd")},
                         "bootstrap": boot[m]})  # fmt: skip
        report["truths"][name] = {
            "n_pairs": int(clean.shape[0]),
            "max_diff_batch_vs_mean_of_pairs": check,
            "n_edges": n_edges,
            "truth": truth,
            "rows": rows,
            "peer": peer,
            "spearman_with_tl": corr,
        }
    print()
    print("| ground truth | peer | CPU s | headscope EAP (denoise) CPU s | max |difference| |")
    print("|---|---|---|---|---|")
    for name, peer in peers:
        print(
            f"| {name} | TransformerLens 4.3 attribution_patch (edge) | {peer['tl_cpu_s']:.1f} | "
            f"{peer['headscope_cpu_s']:.1f} | {peer['max_diff']:.1e} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
