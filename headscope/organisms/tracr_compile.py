"""Compile the bundled tracr organisms (``data/models/tracr-NAME/``) once, offline.

What: five RASP programs whose attention heads have roles known by construction are
compiled to transformer weights with tracr (``tracr-pypi``, needs jax + dm-haiku),
converted with TransformerLens's tracr helpers
(``transformer_lens.utilities.tracr.make_tracr_transformer_bridge_config`` /
``make_tracr_transformer_bridge_state_dict``, which uses
``make_tracr_categorical_unembed``) and written as ``model.safetensors`` +
``config.json`` + ``CARD.md``. At run time headscope loads them into a TransformerLens
``TransformerBridge`` through the native source (``TransformerBridge.boot_native``);
jax is never a runtime dependency.

Only programs with a categorical output can be bundled: TransformerLens's helpers read
the output vocabulary from ``output_encoder.encoding_map`` and raise
``NotImplementedError`` for a numerical output (tracr's ``NumericalEncoder``, e.g.
``lib.make_frac_prevs`` or ``lib.make_pair_balance`` on their own). ``dyck`` therefore
carries two ``make_frac_prevs`` heads (numerical aggregates) inside a program whose
output is categorical.

How: the script runs in two interpreters. Stage ``compile`` needs tracr and runs in a
throwaway venv; it writes the raw tracr parameters (``raw.npz``) and metadata
(``raw.json``: model config, residual labels, input/output encodings, each head's
read/write subspaces, and tracr's own outputs on example inputs). Stage ``convert``
runs in the project venv (torch + TransformerLens), feeds a duck-typed stand-in of the
tracr model to TransformerLens's helpers, boots the bridge and checks that its argmax
outputs equal tracr's on every recorded example before writing anything.

Usage (from the repository root)::

    python -m venv /tmp/tracr-venv && /tmp/tracr-venv/bin/pip install tracr-pypi
    .venv/bin/python headscope/organisms/tracr_compile.py --tracr-python /tmp/tracr-venv/bin/python

This file imports only the standard library and numpy at module level, so that the
``compile`` stage runs in the tracr venv without torch or headscope installed.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BOS, PAD = "BOS", "PAD"

# name -> source (RASP, for the card), vocab, max_seq_len, causal, what (it computes), notes (optional, for the card)
PROGRAMS: dict[str, dict] = {
    "reverse": {
        "source": (
            "length = SelectorWidth(Select(tokens, tokens, TRUE))            # make_length\n"
            "opp_idx = (length - indices) - 1\n"
            "reverse = Aggregate(Select(indices, opp_idx, EQ), tokens)       # make_reverse(tokens)"
        ),
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 5,
        "causal": False,
        "what": "the input sequence reversed",
    },
    "sort": {
        "source": (
            "smaller = Select(tokens, tokens, LT)\n"
            "target_pos = SelectorWidth(smaller)                              # rank of each token\n"
            "sort = Aggregate(Select(target_pos, indices, EQ), tokens)       # make_sort_unique(tokens, tokens)"
        ),
        "vocab": [1, 2, 3, 4, 5, 6],
        "max_seq_len": 5,
        "causal": False,
        "what": "the input tokens sorted ascending (tokens must be distinct)",
    },
    "shift2": {
        "source": (
            "prev1 = Aggregate(Select(indices, indices, q == k + 1), tokens)  # shift_by(1, tokens)\n"
            "prev2 = Aggregate(Select(indices, indices, q == k + 2), tokens)  # shift_by(2, tokens)\n"
            "pair = SequenceMap(lambda a, b: f'{a}{b}', prev1, prev2)"
        ),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "causal": True,
        "what": "at each position, the previous token followed by the token two back (e.g. 'cb')",
    },
    "hist": {
        "source": (
            "same_tok = Select(tokens, tokens, EQ)\n"
            "hist = SelectorWidth(same_tok)                                   # make_hist()"
        ),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "causal": False,
        "what": "at each position, how many tokens of the input equal this token (a histogram)",
    },
    "dyck": {
        "source": (
            "length = SelectorWidth(Select(tokens, tokens, TRUE))            # make_length\n"
            "prevs = Select(indices, indices, LEQ)                            # key <= query\n"
            "opens = numerical(Aggregate(prevs, numerical(tokens == '('), default=0))   # make_frac_prevs\n"
            "closes = numerical(Aggregate(prevs, numerical(tokens == ')'), default=0))  # make_frac_prevs\n"
            "balance = numerical(LinearSequenceMap(opens, closes, 1, -1))     # make_pair_balance\n"
            "any_negative = numerical(Map(lambda x: x, balance < 0))\n"
            "has_neg = numerical(Aggregate(Select(indices, indices, TRUE), any_negative, default=0))\n"
            "last_zero = Aggregate(Select(indices, length - 1, EQ), balance == 0)\n"
            "shuffle_dyck = last_zero & ~has_neg                              # make_shuffle_dyck(['()'])"
        ),
        "vocab": ["(", ")", "x"],
        "max_seq_len": 5,
        "causal": False,
        "what": (
            "whether the parentheses are balanced (Dyck-1; `x` is a filler token), the same "
            "answer (True/False) at every position"
        ),
        "notes": (
            "Unnamed RASP variables appear as `map_N`: L4H0's query reads `length - 1` (the index\n"
            "of the last position) and its value `balance == 0`; `bools_open` / `bools_close` are\n"
            "`numerical(tokens == '(')` / `')'`. L1H0 and L1H1 are `make_frac_prevs` heads: numerical\n"
            "aggregates (the mean of a 0/1 variable over keys `k <= q`), each writing one residual\n"
            "dimension; L4H1 is one too (the mean of `any_negative` over all keys)."
        ),
    },
}


# ---------------------------------------------------------------------------------------
# stage 1: compile (tracr venv)
# ---------------------------------------------------------------------------------------
def _program(name: str):
    from tracr.compiler import lib
    from tracr.rasp import rasp

    if name == "reverse":
        return lib.make_reverse(rasp.tokens)
    if name == "sort":
        return lib.make_sort_unique(rasp.tokens, rasp.tokens)
    if name == "shift2":
        s1 = lib.shift_by(1, rasp.tokens).named("prev1")
        s2 = lib.shift_by(2, rasp.tokens).named("prev2")
        return rasp.SequenceMap(lambda a, b: f"{a}{b}", s1, s2).named("pair")
    if name == "hist":
        return lib.make_hist()
    if name == "dyck":
        return lib.make_shuffle_dyck(["()"])
    raise KeyError(name)


def _examples(name: str, vocab: list, n_max: int, k: int = 64, seed: int = 0) -> list[list]:
    """Example inputs (without BOS) covering every length; distinct tokens for ``sort``."""
    rng = random.Random(seed)
    out = []
    for i in range(k):
        n = 1 + i % n_max
        if name == "sort":
            out.append(rng.sample(vocab, n))
        else:
            out.append([rng.choice(vocab) for _ in range(n)])
    return out


def _subspace(w: np.ndarray, labels: list[str], axis: int) -> list[str]:
    """Residual variables (label prefixes) a weight block reads (axis=1) or writes (axis=0)."""
    idx = np.nonzero(np.abs(w).sum(axis=axis) > 1e-9)[0]
    return sorted({labels[i].rsplit(":", 1)[0] for i in idx})


def stage_compile(out: Path) -> None:
    from tracr.compiler import compiling

    out.mkdir(parents=True, exist_ok=True)
    for name, prog in PROGRAMS.items():
        program = _program(name)
        m = compiling.compile_rasp_to_model(
            program,
            vocab=set(prog["vocab"]),
            max_seq_len=prog["max_seq_len"],
            causal=prog["causal"],
            compiler_bos=BOS,
            compiler_pad=PAD,
        )
        mc = m.model_config
        labels = list(m.residual_labels)
        H, dh = mc.num_heads, mc.key_size
        heads = {}
        for L in range(mc.num_layers):
            p = f"transformer/layer_{L}/attn/"
            wq, wk, wv = (np.asarray(m.params[p + s]["w"]) for s in ("query", "key", "value"))  # [d_model, H*dh]
            wo = np.asarray(m.params[p + "linear"]["w"])  # [H*dh, d_model]
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                heads[f"L{L}H{h}"] = {
                    "query_reads": _subspace(wq[:, sl], labels, 1),
                    "key_reads": _subspace(wk[:, sl], labels, 1),
                    "value_reads": _subspace(wv[:, sl], labels, 1),
                    "writes": _subspace(wo[sl, :], labels, 0),
                }
        examples = []
        for xs in _examples(name, prog["vocab"], prog["max_seq_len"]):
            res = m.apply([BOS, *xs])
            examples.append(
                {
                    "input": xs,
                    "output": list(res.decoded[1:]),
                    "final_residual": np.asarray(res.transformer_output[0]).tolist(),
                }
            )
        arrays: dict[str, Any] = {f"{mod}|{par}": np.asarray(v) for mod, d in m.params.items() for par, v in d.items()}
        np.savez(out / f"{name}.npz", **arrays)
        meta = {
            "model_config": {
                "num_layers": mc.num_layers,
                "num_heads": mc.num_heads,
                "key_size": mc.key_size,
                "mlp_hidden_size": mc.mlp_hidden_size,
                "causal": bool(mc.causal),
                "layer_norm": bool(mc.layer_norm),
            },
            "residual_labels": labels,
            "output_label": program.label,
            "input_encoding": [[k, int(v)] for k, v in m.input_encoder.encoding_map.items()],
            "output_encoding": [[k, int(v)] for k, v in m.output_encoder.encoding_map.items()],
            "heads": heads,
            "examples": examples,
        }
        (out / f"{name}.json").write_text(json.dumps(meta, indent=1, default=str))
        print(f"compiled {name}: {mc.num_layers} layers x {mc.num_heads} heads, d_model {len(labels)}", flush=True)


# ---------------------------------------------------------------------------------------
# stage 2: convert (project venv)
# ---------------------------------------------------------------------------------------
class _Encoder:
    def __init__(self, pairs: list) -> None:
        self.encoding_map = {k: v for k, v in pairs}


class _TracrStandIn:
    """Duck-typed ``AssembledTransformerModel``: what TransformerLens's helpers read."""

    def __init__(self, npz: dict, meta: dict) -> None:
        from types import SimpleNamespace

        self.params: dict[str, dict[str, np.ndarray]] = {}
        for key, v in npz.items():
            mod, par = key.split("|")
            self.params.setdefault(mod, {})[par] = v
        self.model_config = SimpleNamespace(**meta["model_config"])
        self.residual_labels = meta["residual_labels"]
        self.input_encoder = _Encoder(meta["input_encoding"])
        self.output_encoder = _Encoder(meta["output_encoding"])


def _card(name: str, prog: dict, meta: dict, cfg: dict, n_checked: int) -> str:
    inp = ", ".join(f"`{k}`→{v}" for k, v in meta["input_encoding"])
    outp = ", ".join(f"`{k}`→{v}" for k, v in meta["output_encoding"])
    n_max = prog["max_seq_len"]
    notes = f"\n{prog['notes']}\n" if prog.get("notes") else ""
    rows = []
    for head, r in meta["heads"].items():
        role = ", ".join(r["writes"]) if r["writes"] else "none (all weights zero: an unused head slot)"
        rows.append(
            f"| {head} | {', '.join(r['query_reads']) or '-'} | {', '.join(r['key_reads']) or '-'} | "
            f"{', '.join(r['value_reads']) or '-'} | {role} |"
        )
    return f"""# Organism `tracr-{name}`

A RASP program compiled to transformer weights by tracr (tracr-pypi), converted with
TransformerLens's `transformer_lens/utilities/tracr.py` helpers and loaded into a
`TransformerBridge` through the native source (`TransformerBridge.boot_native`).
Written by `headscope/organisms/tracr_compile.py`; nothing here was trained.

## Program

Computes {prog["what"]}.

```
{prog["source"]}
```

`vocab = {prog["vocab"]}`, `max_seq_len = {prog["max_seq_len"]}` (+1 for BOS), `causal = {prog["causal"]}`.

## Architecture

{cfg["n_layers"]} layer(s) × {cfg["n_heads"]} head(s), d_head {cfg["d_head"]}, d_model {cfg["d_model"]}
(one residual dimension per RASP variable value), d_mlp {cfg["d_mlp"]}, ReLU MLPs, no layer norm,
{cfg["attention_dir"]} attention, input vocabulary {cfg["d_vocab"]}, output vocabulary {cfg["d_vocab_out"]}.

## Input and output encoding

Input ids: {inp}. A sequence is `BOS x_1 .. x_n` (`n <= {prog["max_seq_len"]}`);
headscope's `to_tokens("a b c")` prepends BOS. Outputs are read at every position but
BOS: the logits are the residual stream projected onto the output variable's one-hot
directions (categorical unembed), ids {outp}.

## Heads by construction

Which residual variables each head's query, key and value read and which its output
writes (from the compiled weights; a variable named `X_selector_width_attn_output` is
the attention half of a `SelectorWidth`, which attends to BOS and to the selected keys):

| head | query reads | key reads | value reads | writes |
|---|---|---|---|---|
{chr(10).join(rows)}
{notes}
## Checked

The bridge's logits equal tracr's own (final residual × categorical unembed) within
1e-3, and its argmax outputs equal tracr's decoded outputs wherever those are defined, on
all {n_checked} recorded example inputs (every length 1..{n_max}); `tests/circuits/test_circuits.py` re-checks them.
"""


def stage_convert(raw: Path, out_root: Path) -> None:
    """Convert every compiled program in ``raw`` into ``out_root/tracr-NAME`` (1 CPU thread)."""
    from headscope.common.threads import num_threads

    with num_threads(1):
        _convert_all(raw, out_root)


def _convert_all(raw: Path, out_root: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from headscope.backends.tl_native import tracr_bridge

    for name, prog in PROGRAMS.items():
        meta = json.loads((raw / f"{name}.json").read_text())
        npz = dict(np.load(raw / f"{name}.npz"))
        stand_in = _TracrStandIn(npz, meta)
        # tracr's own output label: TransformerLens cannot infer it where several variables
        # share the output's values (dyck)
        bridge, state, fields = tracr_bridge(stand_in, output_label=meta.get("output_label"))
        enc = {str(k): v for k, v in meta["input_encoding"]}
        dec = {v: k for k, v in meta["output_encoding"]}
        n_ok, worst = 0, 0.0
        w_u = state["head.weight"].T  # [d_model, d_vocab_out]
        for ex in meta["examples"]:
            ids = torch.tensor([[enc[BOS]] + [enc[str(x)] for x in ex["input"]]])
            with torch.no_grad():
                logits = bridge(ids, return_type="logits")[0]  # [pos, d_vocab_out]
            ref = torch.tensor(ex.pop("final_residual"), dtype=torch.float32) @ w_u  # tracr's logits
            worst = max(worst, float((logits - ref).abs().max()))
            if worst > 1e-3:
                raise RuntimeError(f"{name}: bridge logits differ from tracr's by {worst:.3g} on {ex['input']}")
            # decoded outputs must agree wherever tracr's choice is unambiguous (undefined
            # positions, e.g. shift_by before the sequence start, decode an all-zero row)
            for i, want in enumerate(ex["output"], start=1):
                top = ref[i].topk(2).values
                if float(top[0] - top[1]) > 0.5 and dec[int(logits[i].argmax())] != want:
                    raise RuntimeError(
                        f"{name}: bridge decodes {dec[int(logits[i].argmax())]!r} at {i} but tracr gives {want!r}"
                    )
            n_ok += 1
        print(f"{name}: max |bridge logits - tracr logits| = {worst:.2e} over {n_ok} examples")
        d = out_root / f"tracr-{name}"
        d.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(d / "model.safetensors"),
            metadata={"format": "pt", "source": "tracr"},
        )
        config = {
            "format": "headscope-tracr-1",
            "program": name,
            "bridge_config": fields,
            "bos": BOS,
            "pad": PAD,
            "vocab": prog["vocab"],
            "max_seq_len": prog["max_seq_len"],
            "causal": prog["causal"],
            "source": prog["source"],
            "input_encoding": meta["input_encoding"],
            "output_encoding": meta["output_encoding"],
            "residual_labels": meta["residual_labels"],
            "heads": meta["heads"],
            "examples": meta["examples"],
        }
        (d / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (d / "CARD.md").write_text(_card(name, prog, meta, fields, n_ok))
        print(f"wrote {d} ({n_ok} examples agree with tracr, max |diff| {worst:.2e})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=("all", "compile", "convert"), default="all")
    ap.add_argument("--raw", default=None, help="folder for the raw tracr dump [a temporary folder]")
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[2] / "data" / "models"),
        help="where tracr-NAME/ folders go [data/models]",
    )
    ap.add_argument(
        "--tracr-python",
        default="/tmp/tracr-venv/bin/python",
        help="interpreter with tracr-pypi installed (stage compile)",
    )
    args = ap.parse_args(argv)
    if args.stage == "compile":
        stage_compile(Path(args.raw))
        return 0
    if args.stage == "convert":
        stage_convert(Path(args.raw), Path(args.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(args.raw or tmp)
        subprocess.run([args.tracr_python, __file__, "--stage", "compile", "--raw", str(raw)], check=True)
        stage_convert(raw, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
