"""The in-process runner: drives an algorithm's server program and client actions in one process.

The round loop (:func:`federated.driver.drive`) is shared with the Flower app: only the
*transport* (how a round of tasks reaches the clients and replies come back) differs, so
bytes are counted identically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from headscope.common import HeadscopeError
from headscope.common.threads import num_threads

from .driver import ALGORITHMS, RunResult, Transport, check_config, client_env, drive, finish, server_env
from .protocol import ClientEnv, FLConfig, Reply, Task, run_client_action

__all__ = [
    "ALGORITHMS",
    "RunResult",
    "check_config",
    "client_env",
    "drive",
    "finish",
    "inprocess_transport",
    "results_markdown",
    "run",
    "save_results",
    "server_env",
]


_LOCAL_FIELDS = (
    "dataset",
    "data_root",
    "clients",
    "alpha",
    "seed",
    "model",
    "width",
    "n_blocks",
    "local_epochs",
    "batch_size",
    "lr",
)


def inprocess_transport(cfg: FLConfig, cache: dict | None = None) -> Transport:
    """Call each client's action in this process, clients in id order; each client keeps its own state.

    With ``cache`` (a dict shared across runs), ``train_local`` replies are reused between
    algorithms that share the same local training (FedAvg, Ensemble, FedDF, DENSE,
    Co-Boosting): same config fields, same initial model, same client → same reply.
    """
    envs: dict[int, ClientEnv] = {}

    def send(tasks: dict[int, Task]) -> dict[int, Reply]:
        out = {}
        for cid in sorted(tasks):
            task = tasks[cid]
            if cid not in envs:
                envs[cid] = client_env(cfg, cid)
            key = None
            if cache is not None and task.action == "train_local":
                key = (tuple(getattr(cfg, f) for f in _LOCAL_FIELDS), cid)
            if key is not None and key in cache:
                out[cid] = cache[key]
                continue
            with num_threads(1):
                out[cid] = run_client_action(task, envs[cid])
            if key is not None:
                cache[key] = out[cid]
        return out

    return send


def run(cfg: FLConfig, engine: str = "inprocess", cache: dict | None = None, **flower_kw) -> RunResult:
    """Run one algorithm end to end and evaluate the deployed model on the test set.

    ``engine="inprocess"`` calls the clients directly; ``engine="flower"`` runs the same
    steps as a Flower ``ServerApp``/``ClientApp`` on Flower's simulation engine.
    """
    check_config(cfg)
    if engine == "flower":
        from .flower import run_flower

        return run_flower(cfg, **flower_kw)
    if engine != "inprocess":
        raise HeadscopeError(f"unknown engine {engine!r}; choose inprocess or flower")
    t0 = time.perf_counter()
    with num_threads(1):  # one thread per run, as on a client; the caller's setting is restored
        env = server_env(cfg)
        program = ALGORITHMS[cfg.algorithm](cfg, env)
        result, up, down, rounds = drive(program, inprocess_transport(cfg, cache), label=cfg.algorithm)
        return finish(cfg, env, result, up, down, rounds, time.perf_counter() - t0, "inprocess")


def results_markdown(results: list[RunResult]) -> str:
    """Markdown table: one row per run."""
    lines = [
        "| algorithm | dataset | clients | α | seed | engine | accuracy | up (KB) | down (KB) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.algorithm} | {r.dataset} | {r.clients} | {r.alpha:g} | {r.seed} | {r.engine} | {r.accuracy:.4f} | "
            f"{r.bytes_up / 1024:.1f} | {r.bytes_down / 1024:.1f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def save_results(results: list[RunResult], out: str | Path) -> list[Path]:
    """Write ``results.json`` and ``results.md`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=2))
    (out / "results.md").write_text(results_markdown(results) + "\n")
    return [out / "results.json", out / "results.md"]
