"""The computational graph of a decoder at head granularity (the nodes and edges that edge
attribution scores; docs/circuits.md, "Circuit discovery").

Writers (what adds to the residual stream): ``input`` (the embeddings), every head
``a{L}.h{h}`` (its ``z`` through its slice of ``W_O``) and every MLP ``m{L}``. Readers (what
reads the residual stream): every head's query ``a{L}.h{h}<q>``, its key and value, every
MLP's input ``m{L}`` and the ``logits``. Names follow EAP-IG / MIB (``a0.h1->a2.h3<q>``).

Grouped-query attention: a key/value head shared by several query heads is *one* reader
per layer and group, named ``a{L}.kv{g}<k>`` / ``<v>``; its edges therefore carry the
effect on every query head of the group (EAP-IG ungroups the heads instead). With as many
key/value heads as query heads the names are the usual ``a{L}.h{h}<k>``.

An edge ``u -> v`` exists when ``u`` writes before ``v`` reads: heads of layer ``L`` read
the input and every head and MLP of earlier layers; the MLP of layer ``L`` also reads the
heads of layer ``L`` unless attention and MLP run in parallel (GPT-J, GPT-NeoX with
``use_parallel_residual``); the logits read everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError


@dataclass(frozen=True)
class HeadGraph:
    """Writers, readers and the edge mask ``[n_writers, n_readers]`` of one model shape."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool = False

    @classmethod
    def from_model(cls, model) -> HeadGraph:
        """The graph of a HeadModel (reads its dimensions and architecture paths)."""
        return cls(model.n_layers, model.n_heads, model.n_kv_heads, parallel_blocks(model))

    # -- nodes ------------------------------------------------------------------------
    @property
    def grouped(self) -> bool:
        return self.n_kv_heads != self.n_heads

    @property
    def writers(self) -> list[str]:
        out = ["input"]
        for L in range(self.n_layers):
            out += [f"a{L}.h{h}" for h in range(self.n_heads)] + [f"m{L}"]
        return out

    def kv_name(self, L: int, g: int, which: str) -> str:
        return f"a{L}.kv{g}<{which}>" if self.grouped else f"a{L}.h{g}<{which}>"

    @property
    def readers(self) -> list[str]:
        out = []
        for L in range(self.n_layers):
            out += [f"a{L}.h{h}<q>" for h in range(self.n_heads)]
            out += [self.kv_name(L, g, "k") for g in range(self.n_kv_heads)]
            out += [self.kv_name(L, g, "v") for g in range(self.n_kv_heads)]
            out.append(f"m{L}")
        return out + ["logits"]

    def reader_slices(self, L: int) -> dict[str, slice]:
        """Where layer ``L``'s readers sit in :attr:`readers`: ``q``, ``k``, ``v``, ``mlp``."""
        per = self.n_heads + 2 * self.n_kv_heads + 1
        base = L * per
        H, K = self.n_heads, self.n_kv_heads
        return {
            "q": slice(base, base + H),
            "k": slice(base + H, base + H + K),
            "v": slice(base + H + K, base + H + 2 * K),
            "mlp": slice(base + H + 2 * K, base + per),
        }

    def writer_slices(self, L: int) -> dict[str, slice]:
        """Where layer ``L``'s writers sit in :attr:`writers`: ``heads`` and ``mlp``."""
        base = 1 + L * (self.n_heads + 1)
        return {"heads": slice(base, base + self.n_heads), "mlp": slice(base + self.n_heads, base + self.n_heads + 1)}

    # -- edges ------------------------------------------------------------------------
    def _stage_w(self) -> list[int]:
        out = [-1]
        for L in range(self.n_layers):
            out += [2 * L] * self.n_heads + [2 * L + 1]
        return out

    def _stage_r(self) -> list[int]:
        out = []
        for L in range(self.n_layers):
            out += [2 * L] * (self.n_heads + 2 * self.n_kv_heads)
            out.append(2 * L if self.parallel else 2 * L + 1)
        return out + [2 * self.n_layers]

    @property
    def mask(self) -> Tensor:
        """``[n_writers, n_readers]``: True where the edge exists."""
        w = torch.tensor(self._stage_w())
        r = torch.tensor(self._stage_r())
        return w[:, None] < r[None, :]

    def edges(self) -> list[str]:
        """Every edge's name ``writer->reader``, in row-major order of :attr:`mask`."""
        W, R, M = self.writers, self.readers, self.mask
        return [f"{W[i]}->{R[j]}" for i, j in M.nonzero().tolist()]

    def edge_index(self, name: str) -> tuple[int, int]:
        """``(writer row, reader column)`` of an edge name; raises on unknown or absent edges."""
        try:
            u, v = name.split("->")
            i, j = self.writers.index(u.strip()), self.readers.index(v.strip())
        except ValueError:
            raise HeadscopeError(
                f"{name!r} is not an edge of this model; write writer->reader, e.g. a0.h1->a1.h2<q> or m0->logits"
            ) from None
        if not bool(self.mask[i, j]):
            raise HeadscopeError(f"{name!r} does not exist: {u} does not write before {v} reads")
        return i, j

    def to_dict(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "parallel": self.parallel,
        }


def parallel_blocks(model) -> bool:
    """Whether attention and MLP of a block read the same residual (no head -> same-layer MLP edges)."""
    par = model.paths.parallel
    if isinstance(par, str):
        return bool(getattr(model.config, par, False))
    return bool(par)


def save_edges(path: str | Path, graph: HeadGraph, edges: list[str], meta: dict | None = None) -> Path:
    """Write a circuit (a set of edge names) as JSON: the graph's shape, the edges, ``meta``."""
    for e in edges:
        graph.edge_index(e)
    p = Path(path)
    p.write_text(json.dumps({"graph": graph.to_dict(), "edges": sorted(edges), **(meta or {})}, indent=2) + "\n")
    return p


def load_edges(path: str | Path) -> tuple[HeadGraph, list[str]]:
    """Read a circuit written by :func:`save_edges` (edges are checked against the graph)."""
    d = json.loads(Path(path).read_text())
    g = HeadGraph(**d["graph"])
    for e in d["edges"]:
        g.edge_index(e)
    return g, list(d["edges"])
