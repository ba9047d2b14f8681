"""Head-patching sweeps sharded across Ray workers, with retries and resumable chunks.

``sharded_patch_heads("llama", clean, corrupt, metric, workers=2)`` splits the sweep of
:func:`headscope.patching.patch_heads` by layer: every layer is one Ray task, run by a
worker that loads its own copy of the model (by name or folder) and calls ``patch_heads``
with ``layers=[L]``. The layers' rows are merged into one
:class:`~headscope.results.HeadResult`. A layer's scores do not depend on the other
layers, and each worker runs the same code with the same number of torch threads, so the
merged result equals the single-process sweep bit for bit
(tests/headscope/test_sharding.py).

* **Retries**: a task whose worker dies (killed, out of memory) is rerun by Ray, up to
  ``max_retries`` times (Ray's task retries; a Python exception is not retried).
* **Resume**: with ``checkpoint=DIR`` every finished layer is written there at once
  (``layer_007.pt``, written to a temporary file and renamed, so a file is complete or
  absent), together with a key of the sweep's inputs. Restarting the same sweep loads the
  finished layers and computes only the others; a directory written by a different sweep
  (other model, prompts or options) is refused. The metric is not part of the key (a
  function cannot be compared): give each metric its own directory.
* **Cluster**: ``address="ray://host:10001"`` (or ``"auto"``) joins an existing Ray cluster;
  by default a local Ray with ``workers`` CPUs starts and stops with the call.

Ray is the distributed engine Flower's simulation already installs (``flwr[simulation]``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.io import atomic_path
from headscope.results import HeadResult

_MODELS: dict[tuple[str, str], object] = {}


def _worker_model(name: str, backend: str):
    """One model per worker process and (name, backend), loaded on first use."""
    from headscope.loading import load_model

    key = (name, backend)
    if key not in _MODELS:
        _MODELS[key] = load_model(name, backend, device="cpu")
    return _MODELS[key]


def _run_layer(name: str, backend: str, clean: Tensor, corrupt: Tensor, metric, layer: int, kwargs: dict,
               threads: int) -> tuple[int, Tensor, dict]:  # fmt: skip
    from headscope.common.threads import num_threads
    from headscope.patching import patch_heads

    with num_threads(threads):
        model = _worker_model(name, backend)
        res = patch_heads(model, clean, corrupt, metric, layers=[layer], show_progress=False, **kwargs)
    return layer, res.scores[layer].clone(), res.info


def sweep_key(name: str, backend: str, clean: Tensor, corrupt: Tensor, kwargs: dict) -> str:
    """What identifies a sweep's checkpoints: model, backend, tokens and options (not the metric)."""
    h = hashlib.sha256()
    h.update(
        json.dumps({"model": name, "backend": backend, **{k: repr(v) for k, v in sorted(kwargs.items())}}).encode()
    )
    h.update(clean.cpu().numpy().tobytes())
    h.update(corrupt.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def sharded_patch_heads(
    model: str,
    clean: Tensor,
    corrupt: Tensor,
    metric: Callable[[Tensor], Tensor],
    *,
    backend: str = "tl",
    workers: int = 2,
    address: str | None = None,
    checkpoint: str | Path | None = None,
    layers: Sequence[int] | None = None,
    threads: int = 1,
    max_retries: int = 2,
    **kwargs,
) -> HeadResult:
    """:func:`~headscope.patching.patch_heads` with its layers spread over Ray workers.

    Args:
        model: a name or folder that :func:`headscope.load_model` loads (each worker loads
            its own copy; an in-memory model cannot be shipped).
        workers: CPUs of the local Ray started for this call (ignored with ``address``).
        address: an existing Ray cluster (``"auto"``, ``"ray://host:10001"``).
        checkpoint: a folder for finished layers; a restarted sweep resumes from it.
        layers: the layers to sweep (default all).
        threads: torch threads per worker (the single-process sweep it should equal must
            use the same number).
        max_retries: reruns of a layer whose worker died.
        **kwargs: passed to ``patch_heads`` (``mode``, ``per_position``, ``max_memory``...).

    Returns:
        The merged HeadResult; ``info["sharding"]`` says how many layers were computed
        and how many were loaded from ``checkpoint``.
    """
    if not isinstance(model, str):
        raise HeadscopeError(
            "sharded sweeps load the model in every worker: pass its name or folder (e.g. 'llama' or "
            "'path/to/model'), not a loaded model"
        )
    if workers < 1:
        raise HeadscopeError(f"workers must be at least 1; got {workers}")
    if "layers" in kwargs or "show_progress" in kwargs:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("show_progress",)}
    from headscope.loading import load_model

    probe = load_model(model, backend, device="cpu")  # validates the name; gives the shape
    clean, corrupt = probe.check_tokens(clean).cpu(), probe.check_tokens(corrupt).cpu()
    n_layers = probe.n_layers
    todo = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [L for L in todo if not 0 <= L < n_layers]
    if bad:
        raise HeadscopeError(f"layers {bad} do not exist; the model has layers 0..{n_layers - 1}")
    del probe
    key = sweep_key(model, backend, clean, corrupt, kwargs)
    done: dict[int, tuple[Tensor, dict]] = {}
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)
        for L in todo:
            f = ck / f"layer_{L:03d}.pt"
            if f.exists():
                saved = torch.load(f, weights_only=False)
                if saved.get("key") != key:
                    raise HeadscopeError(
                        f"{f} belongs to a different sweep (other model, prompts or options); use another "
                        "checkpoint folder or delete it"
                    )
                done[L] = (saved["scores"], saved["info"])
    missing = [L for L in todo if L not in done]
    if missing:
        done.update(_run_ray(model, backend, clean, corrupt, metric, missing, kwargs, workers, address, threads,
                             max_retries, ck, key))  # fmt: skip
    first = done[todo[0]][1]
    per_position = bool(kwargs.get("per_position", False))
    shape = (n_layers, clean.shape[1], first_heads(done)) if per_position else (n_layers, first_heads(done))
    out = torch.full(shape, float("nan"))
    for L, (s, _) in done.items():
        out[L] = s
    info = dict(first)
    info["sharding"] = {
        "workers": workers if address is None else None,
        "address": address,
        "layers_computed": len(missing),
        "layers_loaded": len(todo) - len(missing),
        "checkpoint": str(ck) if ck else None,
    }
    axes = ("layer", "pos", "head") if per_position else ("layer", "head")
    labels = {"pos": info.pop("_pos_labels", [str(i) for i in range(clean.shape[1])])}
    return HeadResult(out, axes, labels, info)


def first_heads(done: dict[int, tuple[Tensor, dict]]) -> int:
    return int(next(iter(done.values()))[0].shape[-1])


def _run_ray(model, backend, clean, corrupt, metric, layers, kwargs, workers, address, threads, max_retries, ck,
             key) -> dict[int, tuple[Tensor, dict]]:  # fmt: skip
    import ray

    started = False
    if not ray.is_initialized():
        start_ray(**({"address": address} if address else {"num_cpus": workers}))
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries)(_run_layer)
        c_ref, k_ref = ray.put(clean), ray.put(corrupt)
        pending = [task.remote(model, backend, c_ref, k_ref, metric, L, kwargs, threads) for L in layers]
        out: dict[int, tuple[Tensor, dict]] = {}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            L, scores, info = ray.get(ready[0])
            out[L] = (scores, info)
            if ck is not None:
                with atomic_path(ck / f"layer_{L:03d}.pt") as tmp:
                    torch.save({"key": key, "scores": scores, "info": info}, tmp)
        return out
    finally:
        if started:
            ray.shutdown()


def start_ray(attempts: int = 3, **kwargs) -> None:
    """``ray.init`` (no dashboard, quiet), retried: Ray gives its local node a fixed 30 s to
    start, which a loaded machine can miss."""
    import ray

    last: Exception | None = None
    for _ in range(attempts):
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a slow start
            if "timed out during startup" not in str(e):
                raise
            last = e
            ray.shutdown()
    raise HeadscopeError(
        f"Ray did not start in {attempts} tries of 30 s each ({last}); the machine is probably overloaded: "
        "retry when it is quieter, or start Ray yourself (ray start --head) and pass address='auto'"
    )
