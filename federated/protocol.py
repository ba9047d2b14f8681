"""The message protocol shared by the in-process runner and the Flower app.

Every algorithm is a *server program* plus named *client actions*:

- the server program is a generator ``server(cfg, env)`` that yields ``{client_id: Task}``
  (what to send to each client), receives ``{client_id: Reply}`` back, and finally
  returns a :class:`ServerResult`;
- a client action ``CLIENT_ACTIONS[task.action](task, client_env) -> Reply`` runs on the
  client with its private data and a state dict kept between the tasks of one run.

The in-process runner (:mod:`federated.runner`) calls the client actions directly; the
Flower app (:mod:`federated.flower`) carries tasks and replies as ``Message``s whose
``ArrayRecord`` holds ``Task.arrays`` and whose ``ConfigRecord`` holds ``Task.config``.
Communication is counted in both as the bytes of the tensors in tasks (down) and replies
(up), by :func:`federated.models.state_bytes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from headscope.common import HeadscopeError

from .models import BlockNet, make_model

ConfigValue = int | float | str | bool


@dataclass(frozen=True)
class FLConfig:
    """Everything that defines a run; flat, so that it travels in a Flower ``ConfigRecord``."""

    algorithm: str = "fusefl"
    dataset: str = "digits"
    data_root: str = ""
    clients: int = 5
    alpha: float = 0.5
    seed: int = 0
    model: str = "auto"  # cnn for images, mlp for vectors
    width: int = 16
    n_blocks: int = 3
    local_epochs: int = 30
    batch_size: int = 16
    lr: float = 0.05
    # FuseFL
    adaptor: str = "avg"  # avg | conv1x1
    ccvr_samples: int = 100  # virtual features per class
    # server-side distillation (FedDF, DENSE, Co-Boosting)
    kd_epochs: int = 30
    kd_lr: float = 0.1  # official 0.01 over 200 epochs; 0.1 for the 20–30 epochs run here
    kd_T: float = 4.0
    g_steps: int = 30
    synth_batch: int = 64
    lr_g: float = 1e-3
    nz: int = 64
    adv: float = 1.0
    hs: float = 1.0
    mu: float = 0.01
    wdc: float = 0.99
    ods_eta: float = 0.03
    feddf_steps: int = 300

    def to_flat(self) -> dict[str, ConfigValue]:
        return dataclasses.asdict(self)

    @classmethod
    def from_flat(cls, d: dict) -> FLConfig:
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in d.items():
            if k in names:
                default = getattr(cls, k)
                kw[k] = type(default)(v)
        return cls(**kw)

    def replace(self, **kw) -> FLConfig:
        return dataclasses.replace(self, **kw)

    def model_kind(self, input_shape: tuple[int, ...]) -> str:
        if self.model != "auto":
            return self.model
        return "cnn" if len(input_shape) == 3 else "mlp"


@dataclass
class Task:
    """What the server sends to one client: an action name, tensors and scalars."""

    action: str
    arrays: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, ConfigValue] = field(default_factory=dict)


@dataclass
class Reply:
    """What a client sends back: tensors and scalar metrics."""

    arrays: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ClientEnv:
    """A client's private view: its data, and a state dict that persists across tasks."""

    cid: int
    cfg: FLConfig
    x: Tensor
    y: Tensor
    num_classes: int
    state: dict[str, Tensor] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass
class ServerEnv:
    """What the server holds: the test set, an unlabeled pool, the task's shape."""

    cfg: FLConfig
    x_test: Tensor
    y_test: Tensor
    x_server: Tensor
    num_classes: int
    input_shape: tuple[int, ...]


@dataclass
class ServerResult:
    """The server program's output: the model it deploys and extra numbers to report."""

    model: nn.Module
    extra: dict[str, float] = field(default_factory=dict)


ServerProgram = Generator[dict[int, Task], dict[int, Reply], ServerResult]
ClientAction = Callable[[Task, ClientEnv], Reply]

CLIENT_ACTIONS: dict[str, ClientAction] = {}


def client_action(name: str) -> Callable[[ClientAction], ClientAction]:
    """Register a client action under ``name`` (the Flower message type is ``train.<name>``)."""

    def deco(fn: ClientAction) -> ClientAction:
        CLIENT_ACTIONS[name] = fn
        return fn

    return deco


def run_client_action(task: Task, env: ClientEnv) -> Reply:
    if task.action not in CLIENT_ACTIONS:
        raise HeadscopeError(f"unknown client action {task.action!r}; known: {', '.join(sorted(CLIENT_ACTIONS))}")
    return CLIENT_ACTIONS[task.action](task, env)


def build_model(cfg: FLConfig, input_shape: tuple[int, ...], num_classes: int, seed_offset: int = 0) -> BlockNet:
    """The run's architecture, initialised from ``cfg.seed + seed_offset`` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed * 1009 + seed_offset)
        return make_model(
            cfg.model_kind(input_shape), input_shape, num_classes, width=cfg.width, n_blocks=cfg.n_blocks
        )


def client_seed(cfg: FLConfig, cid: int, stage: int = 0) -> int:
    return cfg.seed * 100_003 + cid * 101 + stage


def train_local(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Local SGD (momentum 0.9) with cross-entropy on the trainable parameters; returns the last epoch's mean loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or len(x) == 0:
        return float("nan")
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        tot, nb = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        last = tot / max(1, nb)
    model.eval()
    return last


def state_of(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's parameters and buffers (what a client uploads)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@client_action("train_local")
def _train_local_action(task: Task, env: ClientEnv) -> Reply:
    """Train the received model on the client's data for ``local_epochs``; send it back.

    The one client step shared by FedAvg, Ensemble, FedDF, DENSE and Co-Boosting (all
    start from the server's initial model and upload one trained model).
    """
    cfg = env.cfg
    model = build_model(cfg, env.input_shape, env.num_classes)
    model.load_state_dict(task.arrays)
    loss = train_local(model, env.x, env.y, cfg.local_epochs, cfg.batch_size, cfg.lr, client_seed(cfg, env.cid))
    return Reply(arrays=state_of(model), metrics={"num_examples": float(len(env.x)), "train_loss": loss})


def train_all_clients(
    cfg: FLConfig, env: ServerEnv
) -> Generator[dict[int, Task], dict[int, Reply], tuple[list[BlockNet], list[float]]]:
    """Server sub-program: send the initial model to every client, collect the trained models.

    Yields once; returns the client models and their sample counts, in client order.
    """
    init = build_model(cfg, env.input_shape, env.num_classes)
    replies = yield {cid: Task("train_local", state_of(init)) for cid in range(cfg.clients)}
    models = []
    for cid in range(cfg.clients):
        m = build_model(cfg, env.input_shape, env.num_classes)
        m.load_state_dict(replies[cid].arrays)
        m.eval()
        models.append(m)
    return models, [replies[c].metrics.get("num_examples", 1.0) for c in range(cfg.clients)]
