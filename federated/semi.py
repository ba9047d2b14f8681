"""Label-deficient federated learning: the shared setting, multi-round FedAvg, and the two bounds.

The one-shot protocol (:mod:`federated.protocol`) already carries everything a
multi-round method needs: a server program may yield any number of rounds, and a
``Task`` carries named tensors plus scalars. This module adds, without changing it:

- :class:`SemiConfig`, an :class:`~federated.protocol.FLConfig` with the label-deficiency
  settings (labelled-client count, labelled fraction within those clients, rounds,
  clients sampled per round) and the Twin-sight / FixMatch / FreeMatch weights. Only the
  server reads it; every scalar a client needs travels in ``Task.config``, so a Flower
  client (which rebuilds a plain ``FLConfig``) trains exactly like an in-process one.
- :func:`fedavg_rounds`: the server loop of FedAvg (McMahan et al. 2017) over several
  models at once: each round it samples ``clients_per_round`` clients, sends the global
  models (tensor names prefixed ``"<model>."``), and replaces every model by the
  sample-count-weighted average of the uploads (Twin-sight §3.3: both twins are
  aggregated this way).
- :func:`client_views`: a client's labelled rows ``(x_l, y_l)`` and unlabelled rows
  ``x_u``. An unlabelled client's path never touches ``env.y``.
- the bounds of Twin-sight's Table 1: ``fedavg_labelled`` (FedAvg over the labelled
  clients only; lower bound) and ``fedavg_all_labels`` (every client uses its labels;
  upper bound), trained with CE on the weak view.

Setting (Twin-sight §4.1): clients 0 … ``labelled_clients − 1`` hold labels, the rest do
not; partitions are Dirichlet(α) over all clients as in :mod:`federated.data`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headscope.common import HeadscopeError

from . import augment
from .fedavg import average_states
from .models import BlockNet, make_model
from .protocol import (
    ClientEnv,
    ConfigValue,
    FLConfig,
    Reply,
    ServerEnv,
    ServerProgram,
    ServerResult,
    Task,
    build_model,
    client_action,
    state_of,
)


@dataclass(frozen=True)
class SemiConfig(FLConfig):
    """FLConfig plus the label-deficient setting; defaults follow Twin-sight's official config.

    ``local_epochs``/``batch_size``/``lr`` default to Twin-sight's 1 / 64 / 0.01 (SGD,
    momentum 0.9). ``rounds`` is the number of FedAvg rounds (the paper runs hundreds on
    CIFAR; tens suffice for digits / MNIST-1D).
    """

    local_epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    clients: int = 10
    alpha: float = 0.1
    rounds: int = 30
    labelled_clients: int = 4
    labelled_fraction: float = 1.0  # share of labelled rows on a labelled client
    clients_per_round: int = 5
    # Twin-sight (§3.2, official defaults)
    sim: float = 1.0
    ins_dis: float = 0.5
    nce_T: float = 0.07  # SimCLR InfoNCE temperature (official info_nce_loss)
    proj_dim: int = 32  # output size of the unsupervised twin's projection head
    twin_pseudo: str = "none"  # none | fixmatch | freematch: optional pseudo-label loss on unlabelled clients
    pseudo_weight: float = 0.5  # official PC_ulb_loss_ratio
    # FixMatch / FreeMatch
    threshold: float = 0.95  # FixMatch confidence threshold τ
    lambda_u: float = 1.0  # weight of the unlabelled consistency loss
    ema: float = 0.999  # FreeMatch EMA momentum λ


def as_semi(cfg: FLConfig) -> SemiConfig:
    """``cfg`` as a :class:`SemiConfig` (a plain FLConfig gets the semi-supervised defaults) and checked."""
    semi = cfg if isinstance(cfg, SemiConfig) else SemiConfig.from_flat(cfg.to_flat())
    check_semi(semi)
    return semi


def check_semi(cfg: SemiConfig) -> None:
    """Raise a HeadscopeError naming the fix for an impossible label-deficient setting."""
    if cfg.rounds < 1:
        raise HeadscopeError(f"rounds must be >= 1, got {cfg.rounds}")
    if not 0 <= cfg.labelled_clients <= cfg.clients:
        raise HeadscopeError(
            f"labelled_clients must be in 0..{cfg.clients} (the client count), got {cfg.labelled_clients}"
        )
    if not 0.0 < cfg.labelled_fraction <= 1.0:
        raise HeadscopeError(f"labelled_fraction must be in (0, 1], got {cfg.labelled_fraction}")
    if cfg.clients_per_round < 1:
        raise HeadscopeError(f"clients_per_round must be >= 1, got {cfg.clients_per_round}")
    if cfg.twin_pseudo not in ("none", "fixmatch", "freematch"):
        raise HeadscopeError(f"twin_pseudo must be none, fixmatch or freematch, got {cfg.twin_pseudo!r}")
    if not 0.0 < cfg.threshold <= 1.0 or not 0.0 <= cfg.ema < 1.0:
        raise HeadscopeError(f"need 0 < threshold <= 1 and 0 <= ema < 1, got threshold={cfg.threshold}, ema={cfg.ema}")
    if cfg.nce_T <= 0 or cfg.proj_dim < 1:
        raise HeadscopeError(f"need nce_T > 0 and proj_dim >= 1, got nce_T={cfg.nce_T}, proj_dim={cfg.proj_dim}")
    if cfg.batch_size < 2:
        raise HeadscopeError(
            f"semi-supervised training contrasts samples within a batch: batch_size must be >= 2, got {cfg.batch_size}"
        )


# ----------------------------------------------------------------------------- client side
def client_views(env: ClientEnv, labelled: bool, fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_labelled, y_labelled, x_unlabelled)`` of a client.

    A labelled client keeps a seeded ``fraction`` of its rows labelled; an unlabelled
    client returns all rows as unlabelled and never reads ``env.y``.
    """
    x = env.x
    if not labelled:
        return x[:0], torch.zeros(0, dtype=torch.long), x
    n_lab = len(x) if fraction >= 1.0 else int(round(fraction * len(x)))
    perm = (
        torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        if n_lab < len(x)
        else torch.arange(len(x))
    )
    lab, unl = perm[:n_lab], perm[n_lab:]
    return x[lab], env.y[lab], x[unl]


def round_seed(cfg: FLConfig, cid: int, rnd: int) -> int:
    """Seed of client ``cid``'s local training in round ``rnd`` (data order and augmentations)."""
    return cfg.seed * 1_000_003 + rnd * 1009 + cid * 7 + 1


def batches(n_lab: int, n_unl: int, batch_size: int, g: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """One epoch of mini-batches over a client's rows: ``[(labelled idx, unlabelled idx), ...]``.

    Labelled and unlabelled rows are shuffled together and cut into batches of
    ``batch_size`` (so a batch mixes both in the client's proportion); a trailing batch
    of one row is dropped (a contrastive loss needs two).
    """
    n = n_lab + n_unl
    perm = torch.randperm(n, generator=g)
    out = []
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) < 2 and n >= 2:
            continue
        out.append((idx[idx < n_lab], idx[idx >= n_lab] - n_lab))
    return out


def views(x: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(weak, strong) views of a batch, drawn in that order from ``g``."""
    return augment.weak(x, g), augment.strong(x, g)


def load_models(arrays: dict[str, Tensor], builders: dict[str, Callable[[], nn.Module]]) -> dict[str, nn.Module]:
    """Build each named model and load its ``"<name>."``-prefixed tensors from ``arrays``."""
    out = {}
    for name, build in builders.items():
        m = build()
        pre = name + "."
        m.load_state_dict({k[len(pre) :]: v for k, v in arrays.items() if k.startswith(pre)})
        out[name] = m
    return out


def pack(models: dict[str, nn.Module]) -> dict[str, Tensor]:
    """Flatten several models into one ``"<name>.<param>"`` tensor dict (what travels)."""
    return {f"{name}.{k}": v for name, m in models.items() for k, v in state_of(m).items()}


def twin_builders(
    cfg: FLConfig, input_shape: tuple[int, ...], num_classes: int, proj_dim: int
) -> dict[str, Callable[[], BlockNet]]:
    """The supervised twin (``sup``: features → classes) and the unsupervised twin (``unsup``: features → projection).

    Both share the run's architecture; the unsupervised twin's last linear layer is its
    SimCLR projection head (``proj_dim`` outputs). Initialised from different seeds.
    """

    def unsup() -> BlockNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 1009 + 77)
            return make_model(
                cfg.model_kind(input_shape), input_shape, proj_dim, width=cfg.width, n_blocks=cfg.n_blocks
            )

    return {"sup": lambda: build_model(cfg, input_shape, num_classes), "unsup": unsup}


def sgd(models: list[nn.Module], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 over all models' parameters (Twin-sight's optimiser)."""
    return torch.optim.SGD([p for m in models for p in m.parameters()], lr=lr, momentum=0.9)


@client_action("semi_supervised")
def _supervised_action(task: Task, env: ClientEnv) -> Reply:
    """FedAvg local step of the bounds: CE on the weak view of the client's labelled rows.

    ``task.config["labelled"]`` says whether this client may use labels (the upper bound
    sends 1 to every client, the lower bound only samples labelled clients).
    """
    cfg, c = env.cfg, task.config
    models = load_models(task.arrays, {"sup": lambda: build_model(cfg, env.input_shape, env.num_classes)})
    model = models["sup"]
    seed = int(c["seed"])
    x_l, y_l, _ = client_views(env, bool(int(c["labelled"])), float(c["labelled_fraction"]), seed)
    g = torch.Generator().manual_seed(seed)
    opt = sgd([model], cfg.lr)
    model.train()
    tot, nb = 0.0, 0
    for _ in range(cfg.local_epochs):
        for li, _ui in batches(len(x_l), 0, cfg.batch_size, g):
            xw = augment.weak(x_l[li], g)
            loss = F.cross_entropy(model(xw), y_l[li])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, nb = tot + float(loss.detach()), nb + 1
    model.eval()
    return Reply(pack(models), {"num_examples": float(len(x_l)), "loss": tot / max(1, nb)})


# ----------------------------------------------------------------------------- server side
def sample_round(cfg: SemiConfig, rnd: int, pool: list[int]) -> list[int]:
    """The ``clients_per_round`` clients of round ``rnd`` (seeded, uniform without replacement from ``pool``)."""
    k = min(cfg.clients_per_round, len(pool))
    g = torch.Generator().manual_seed(cfg.seed * 7919 + rnd)
    pick = torch.randperm(len(pool), generator=g)[:k]
    return sorted(pool[int(i)] for i in pick)


def task_config(cfg: SemiConfig, cid: int, rnd: int, labelled: bool) -> dict[str, ConfigValue]:
    """The scalars a client needs for one round (everything beyond the plain FLConfig)."""
    return {
        "labelled": int(labelled),
        "labelled_fraction": float(cfg.labelled_fraction),
        "seed": round_seed(cfg, cid, rnd),
        "sim": float(cfg.sim),
        "ins_dis": float(cfg.ins_dis),
        "nce_T": float(cfg.nce_T),
        "proj_dim": int(cfg.proj_dim),
        "twin_pseudo": cfg.twin_pseudo,
        "pseudo_weight": float(cfg.pseudo_weight),
        "threshold": float(cfg.threshold),
        "lambda_u": float(cfg.lambda_u),
        "ema": float(cfg.ema),
    }


def fedavg_rounds(
    cfg: SemiConfig,
    models: dict[str, nn.Module],
    action: str,
    pool: list[int],
    labelled: Callable[[int], bool],
    extra_config: dict[str, ConfigValue] | None = None,
) -> Generator[dict[int, Task], dict[int, Reply], dict[str, float]]:
    """Server sub-program: ``cfg.rounds`` rounds of FedAvg over all ``models`` (updated in place).

    Each round: sample clients from ``pool``, send every model, average each uploaded model
    weighted by the client's ``num_examples``. ``extra_config`` is added to every task's
    scalars. Returns the last round's mean of every
    scalar metric the clients report (besides ``num_examples``).
    """
    last: dict[str, float] = {}
    for rnd in range(cfg.rounds):
        chosen = sample_round(cfg, rnd, pool)
        arrays = pack(models)
        replies = yield {
            cid: Task(action, dict(arrays), {**task_config(cfg, cid, rnd, labelled(cid)), **(extra_config or {})})
            for cid in chosen
        }
        weights = [float(replies[c].metrics.get("num_examples", 1.0)) for c in chosen]
        if sum(weights) <= 0:
            weights = [1.0] * len(chosen)
        for name, m in models.items():
            pre = name + "."
            states = [{k[len(pre) :]: v for k, v in replies[c].arrays.items() if k.startswith(pre)} for c in chosen]
            m.load_state_dict(average_states(states, weights))
        keys = sorted({k for c in chosen for k in replies[c].metrics} - {"num_examples"})
        last = {k: sum(float(replies[c].metrics.get(k, 0.0)) for c in chosen) / len(chosen) for k in keys}
    return last


def _bound_server(cfg: FLConfig, env: ServerEnv, all_labels: bool) -> ServerProgram:
    semi = as_semi(cfg)
    if all_labels:
        semi = semi.replace(labelled_fraction=1.0)
    model = build_model(semi, env.input_shape, env.num_classes)
    pool = list(range(semi.clients)) if all_labels else list(range(semi.labelled_clients))
    if not pool:
        raise HeadscopeError("the labelled-clients-only baseline needs labelled_clients >= 1")
    metrics = yield from fedavg_rounds(
        semi, {"sup": model}, "semi_supervised", pool, lambda cid: all_labels or cid < semi.labelled_clients
    )
    return ServerResult(model.eval(), {f"last_{k}": v for k, v in metrics.items()})


def server_labelled_only(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Lower bound: multi-round FedAvg over the labelled clients only (CE on weak views)."""
    return (yield from _bound_server(cfg, env, all_labels=False))


def server_all_labels(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Upper bound: multi-round FedAvg in which every client uses all its labels."""
    return (yield from _bound_server(cfg, env, all_labels=True))
