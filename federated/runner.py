"""The in-process runner: drives an algorithm's server program and client actions in one process.

:func:`drive` is shared with the Flower app: only the *transport* (how a round of tasks
reaches the clients and replies come back) differs, so bytes are counted identically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from headscope.common import HeadscopeError, log

from . import coboosting, dense, ensemble, fedavg, feddf, fixmatch, fusefl, semi, twinsight
from .data import make_split
from .models import evaluate, state_bytes
from .protocol import ClientEnv, FLConfig, Reply, ServerEnv, ServerProgram, ServerResult, Task, run_client_action

ALGORITHMS: dict[str, Callable[[FLConfig, ServerEnv], ServerProgram]] = {
    "fedavg": fedavg.server,
    "ensemble": ensemble.server,
    "feddf": feddf.server,
    "dense": dense.server,
    "coboosting": coboosting.server,
    "fusefl": fusefl.server,
    # multi-round, label-deficient (semi.py: SemiConfig; docs/twinsight.md)
    "twinsight": twinsight.server,
    "fixmatch": fixmatch.server_fixmatch,
    "freematch": fixmatch.server_freematch,
    "fedavg_labelled": semi.server_labelled_only,
    "fedavg_all_labels": semi.server_all_labels,
}

Transport = Callable[[dict[int, Task]], dict[int, Reply]]


@dataclass
class RunResult:
    """One run's outcome: test accuracy, bytes client→server (up) and server→client (down), wall time."""

    algorithm: str
    dataset: str
    clients: int
    alpha: float
    seed: int
    engine: str
    accuracy: float
    bytes_up: int
    bytes_down: int
    seconds: float
    rounds: int
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_config(cfg: FLConfig) -> None:
    """Raise a HeadscopeError naming the fix for every impossible setting."""
    if cfg.algorithm not in ALGORITHMS:
        raise HeadscopeError(f"unknown algorithm {cfg.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if not isinstance(cfg.alpha, (int, float)) or not cfg.alpha > 0:
        raise HeadscopeError(
            f"Dirichlet alpha must be > 0, got {cfg.alpha}; smaller alpha = more label skew, e.g. --alpha 0.1"
        )
    if cfg.clients < 1:
        raise HeadscopeError(f"need at least one client, got --clients {cfg.clients}")
    for name in ("local_epochs", "batch_size", "n_blocks", "width"):
        if getattr(cfg, name) < 1:
            raise HeadscopeError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise HeadscopeError(f"lr must be > 0, got {cfg.lr}")


def server_env(cfg: FLConfig) -> ServerEnv:
    split = make_split(cfg.dataset, cfg.clients, cfg.alpha, cfg.seed, cfg.data_root or None)
    d = split.data
    return ServerEnv(cfg, d.x_test, d.y_test, d.x_server, d.num_classes, d.input_shape)


def client_env(cfg: FLConfig, cid: int) -> ClientEnv:
    split = make_split(cfg.dataset, cfg.clients, cfg.alpha, cfg.seed, cfg.data_root or None)
    x, y = split.client(cid)
    return ClientEnv(cid, cfg, x, y, split.data.num_classes)


def drive(program: ServerProgram, transport: Transport, label: str = "") -> tuple[ServerResult, int, int, int]:
    """Run a server program to completion over ``transport``; returns (result, bytes up, bytes down, rounds)."""
    up = down = rounds = 0
    try:
        tasks = next(program)
        while True:
            rounds += 1
            actions = sorted({t.action for t in tasks.values()})
            log(f"[{label}] round {rounds}: {', '.join(actions)} on {len(tasks)} clients")
            down += sum(state_bytes(t.arrays) for t in tasks.values())
            replies = transport(tasks)
            missing = set(tasks) - set(replies)
            if missing:
                raise HeadscopeError(f"clients {sorted(missing)} did not reply in round {rounds}")
            up += sum(state_bytes(r.arrays) for r in replies.values())
            tasks = program.send(replies)
    except StopIteration as stop:
        return stop.value, up, down, rounds


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
            torch.set_num_threads(1)
            out[cid] = run_client_action(task, envs[cid])
            if key is not None:
                cache[key] = out[cid]
        return out

    return send


def finish(
    cfg: FLConfig, env: ServerEnv, result: ServerResult, up: int, down: int, rounds: int, seconds: float, engine: str
) -> RunResult:
    acc = evaluate(result.model, env.x_test, env.y_test)
    return RunResult(
        algorithm=cfg.algorithm,
        dataset=cfg.dataset,
        clients=cfg.clients,
        alpha=cfg.alpha,
        seed=cfg.seed,
        engine=engine,
        accuracy=acc,
        bytes_up=up,
        bytes_down=down,
        seconds=seconds,
        rounds=rounds,
        extra=dict(result.extra),
    )


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
    env = server_env(cfg)
    torch.set_num_threads(1)
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
