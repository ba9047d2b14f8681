"""Write the tracr organisms' true circuits as edge files (``tests/circuits/tracr_NAME.edges.json``).

A compiled RASP program gives each variable its own residual dimensions, so its circuit is
read off its weights (:func:`headscope.backends.tl_native.weight_edges`: writer ``u`` feeds
reader ``v`` when ``u``'s output and ``v``'s input matrices share a dimension). These
files are the ground truths that ``benchmarks/circuit_discovery.py`` scores edge
attribution against; ``tests/headscope/test_eap_tracr.py`` re-derives them from the
weights. Usage (repository root)::

    .venv/bin/python -m headscope.organisms.tracr_edges
"""

from __future__ import annotations

from pathlib import Path

from headscope.backends.tl_native import weight_edges
from headscope.graph import HeadGraph, save_edges
from headscope.loading import load_model
from headscope.paths import bundled_tracr

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """Write one edge file per bundled tracr organism."""
    for name in bundled_tracr():
        model = load_model(name, backend="tl")
        edges = weight_edges(model)
        out = ROOT / "tests" / "circuits" / f"{name.replace('-', '_')}.edges.json"
        meta = {
            "model": name,
            "source": "read off the compiled weights by headscope.backends.tl_native.weight_edges "
            "(python -m headscope.organisms.tracr_edges)",
            "edges_meaning": "u -> v when u's output matrix (embeddings, a head's W_O slice, an MLP's W_out) and "
            "v's input matrix (a head's W_Q/W_K/W_V slice, an MLP's W_in, W_U) share a residual dimension: the "
            "program's whole computation graph, including parts a given task's corruption leaves unchanged",
        }
        save_edges(out, HeadGraph.from_model(model), edges, meta)
        print(f"{out.relative_to(ROOT)}: {len(edges)} of {int(HeadGraph.from_model(model).mask.sum())} edges")


if __name__ == "__main__":
    main()
