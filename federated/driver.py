"""What both engines share: the algorithm registry, the run's environments, the round loop and the result.

:func:`drive` runs an algorithm's server program over a *transport* (how a round of tasks
reaches the clients and how replies come back). The in-process runner
(:mod:`federated.runner`) and the Flower app (:mod:`federated.flower`) differ only in the
transport they pass, so bytes are counted identically. Both import this module; it imports
neither of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from headscope.common import HeadscopeError, log

from . import coboosting, dense, ensemble, fedavg, feddf, fixmatch, fusefl, semi, twinsight
from .data import make_split
from .models import evaluate, state_bytes
from .protocol import ClientEnv, FLConfig, Reply, ServerEnv, ServerProgram, ServerResult, Task

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
    """The server's view of the run: test set, unlabelled pool and data shape (no client data)."""
    split = make_split(cfg.dataset, cfg.clients, cfg.alpha, cfg.seed, cfg.data_root or None)
    d = split.data
    return ServerEnv(cfg, d.x_test, d.y_test, d.x_server, d.num_classes, d.input_shape)


def client_env(cfg: FLConfig, cid: int) -> ClientEnv:
    """Client ``cid``'s private partition of the run's split, with an empty state."""
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


def finish(
    cfg: FLConfig, env: ServerEnv, result: ServerResult, up: int, down: int, rounds: int, seconds: float, engine: str
) -> RunResult:
    """Evaluate the deployed model on the test set and package the run as a :class:`RunResult`."""
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
