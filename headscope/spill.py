"""Activation caches for many prompts: bounded memory, spilling to safetensors shards.

``cache_activations(model, tokens, sites=("z",), layers=[3])`` runs the prompts in chunks
of ``max_pairs`` and keeps only the sites and layers asked for. Chunks accumulate in
memory up to ``max_memory``; beyond it they are written to a shard
(``shard_00000.safetensors``, one tensor per ``site.layer``) in ``spill_dir`` and dropped.
:class:`SpilledCache` reads one ``(site, layer)`` back at a time, concatenated over the
prompts, so reading layer 3's ``z`` for 10,000 prompts holds that tensor and nothing else.

Written by hand: TransformerLens's ``run_with_cache`` and nnsight's ``.save()`` hold every
cached tensor of the whole batch in memory (TransformerLens #746, nnsight #396).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.fastpatch import parse_memory


class SpilledCache:
    """Cached activations ``(site, layer) -> [n_prompts, ...]``, partly in memory and partly
    in safetensors shards (:func:`cache_activations` builds it).

    ``cache.get("z", 3)`` (or ``cache["z", 3]``) concatenates that tensor over the prompts;
    ``cache.shards`` lists the files written; ``cache.close()`` deletes a temporary folder.
    """

    def __init__(self, folder: Path, keys: list[tuple[str, int]], temporary: bool) -> None:  # noqa: D107
        self.folder = folder
        self.keys = keys
        self.shards: list[Path] = []
        self.memory: dict[tuple[str, int], list[Tensor]] = {k: [] for k in keys}
        self._temporary = temporary

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not any(self.memory[k] for k in self.keys):
            return
        path = self.folder / f"shard_{len(self.shards):05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({f"{s}.{L}": torch.cat(self.memory[(s, L)]).contiguous() for s, L in self.keys}, str(tmp))
        tmp.replace(path)  # atomic: a shard is either whole or absent
        self.shards.append(path)
        self.memory = {k: [] for k in self.keys}

    def nbytes_in_memory(self) -> int:
        """Bytes of the cached tensors held in memory now."""
        return sum(t.numel() * t.element_size() for ts in self.memory.values() for t in ts)

    def get(self, site: str, layer: int) -> Tensor:
        """``site`` at ``layer`` for every prompt, in prompt order."""
        from safetensors import safe_open

        if (site, layer) not in self.memory:
            raise HeadscopeError(f"({site!r}, {layer}) was not cached; cached: {self.keys}")
        parts = []
        for path in self.shards:
            with safe_open(str(path), framework="pt") as f:
                parts.append(f.get_tensor(f"{site}.{layer}"))
        parts += self.memory[(site, layer)]
        return torch.cat(parts)

    def __getitem__(self, key: tuple[str, int]) -> Tensor:
        return self.get(*key)

    def close(self) -> None:
        """Delete the shards if the folder was temporary."""
        if self._temporary:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def cache_activations(
    model,
    tokens: Tensor,
    sites: Sequence[str] = ("z",),
    layers: Sequence[int] | None = None,
    *,
    max_pairs: int = 256,
    max_memory: int | str | None = "1GB",
    spill_dir: str | Path | None = None,
    show_progress: bool = True,
) -> SpilledCache:
    """Cache ``sites`` at ``layers`` for every prompt of ``tokens`` ``[n, pos]`` in bounded memory.

    Args:
        sites: any of :meth:`headscope.model.HeadModel.run_with_heads`'s sites (``z``,
            ``resid_pre``, ``q``, ``attn_out``, ...).
        layers: the layers to keep (default: all).
        max_pairs: prompts per forward pass.
        max_memory: cached bytes held in memory before they spill to a shard (``"1GB"``,
            ``"256MB"``, an int); ``None``: never spill.
        spill_dir: where shards go (default: a temporary folder, deleted by ``close()``).
    """
    tokens = model.check_tokens(tokens)
    if max_pairs < 1:
        raise HeadscopeError(f"max_pairs must be >= 1; got {max_pairs}")
    layers = list(range(model.n_layers)) if layers is None else sorted(set(layers))
    budget = None if max_memory is None else parse_memory(max_memory)
    temporary = spill_dir is None
    folder = Path(tempfile.mkdtemp(prefix="headscope-cache-")) if spill_dir is None else Path(spill_dir)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [(s, L) for s in sites for L in layers]
    cache = SpilledCache(folder, keys, temporary)
    starts = list(range(0, tokens.shape[0], max_pairs))
    for i in progress(starts, desc="caching") if show_progress else starts:
        _, hc = model.run_with_heads(tokens[i : i + max_pairs], layers=layers, sites=tuple(sites))
        for s, L in keys:
            cache.memory[(s, L)].append(hc.site(s)[L].detach().clone())
        del hc
        if budget is not None and cache.nbytes_in_memory() > budget:
            cache._flush()
    if cache.shards:  # once anything spilled, the tail goes to disk as well
        cache._flush()
    return cache


__all__: Sequence[str] = ("SpilledCache", "cache_activations")
