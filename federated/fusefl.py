"""FuseFL: one-shot FL by progressive model fusion (Tang et al., NeurIPS 2024).

The network is cut into K blocks (:class:`federated.models.BlockNet`). For stage
k = 0 … K−1 (paper §4, Algorithm 1):

1. every client m trains its current model — the fused blocks 0…k−1 (frozen), its own
   adaptor and blocks k…K−1, and its classifier — on its local data;
2. it uploads block k together with the adaptor in front of it (the *branch* (k, m));
3. the server fuses block k: the global block k runs all M branches; branch (k, m)
   reads the M outputs of fused block k−1 through its adaptor, either their average
   (``adaptor="avg"``) or a 1×1 conv from C·M to C channels (``"conv1x1"``; here it
   starts as the average map, the official code starts it at random);
4. the fused block is sent to every client, whose next block gets a fresh adaptor.

After the last stage the global features are the mean of the M last-block branch
outputs, the clients' classifiers are averaged, and the classifier is calibrated with
CCVR (Luo et al. 2021; FuseFL §4.3): clients send per-class feature means/covariances of
the fused model, the server pools them into class Gaussians, samples virtual features and
runs one pass of classifier training on them. Each stage uploads one block per client, so
the blocks sent add up to one whole model per client, as in other one-shot methods; the
CCVR statistics are counted on top (``extra["ccvr_up_bytes"]``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from headscope.common import HeadscopeError

from .protocol import (
    ClientEnv,
    FLConfig,
    Reply,
    ServerEnv,
    ServerProgram,
    ServerResult,
    Task,
    build_model,
    client_action,
    client_seed,
    state_of,
    train_local,
)

ADAPTORS = ("avg", "conv1x1")


class Adaptor(nn.Module):
    """Maps the M branch outputs of fused block k−1 to the input of one block k.

    ``avg``: ``mean_m h_m``. ``conv1x1``: ``W · concat_m(h_m)`` over channels (a 1×1 conv for
    ``[B, C, H, W]`` features, a linear map for ``[B, C]``), initialised to the average.
    """

    def __init__(self, mode: str, channels: int, n_branches: int, spatial: bool) -> None:
        super().__init__()
        if mode not in ADAPTORS:
            raise HeadscopeError(f"unknown FuseFL adaptor {mode!r}; choose one of {', '.join(ADAPTORS)}")
        self.mode = mode
        self.proj: nn.Module | None = None
        if mode == "conv1x1":
            self.proj = (
                nn.Conv2d(channels * n_branches, channels, 1)
                if spatial
                else nn.Linear(channels * n_branches, channels)
            )
            with torch.no_grad():
                eye = torch.eye(channels) / n_branches
                w = torch.cat([eye] * n_branches, dim=1)  # [C, C·M]
                self.proj.weight.copy_(w.view_as(self.proj.weight))
                self.proj.bias.zero_()

    def forward(self, xs: list[Tensor]) -> Tensor:
        if self.proj is None:
            return torch.stack(xs).mean(0)
        return self.proj(torch.cat(xs, dim=1))


class Branch(nn.Module):
    """Client m's block k with the adaptor in front of it (no adaptor for k = 0)."""

    def __init__(self, block: nn.Module, adaptor: Adaptor | None) -> None:
        super().__init__()
        self.adaptor = adaptor
        self.block = block

    def forward(self, h: Tensor | list[Tensor]) -> Tensor:
        if self.adaptor is not None:
            h = self.adaptor(h)  # type: ignore[arg-type]
        return self.block(h)


class FusedBlock(nn.Module):
    """Global block k: every client's branch on the same input; outputs the M branch outputs."""

    def __init__(self, branches: list[Branch]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, h: Tensor | list[Tensor]) -> list[Tensor]:
        return [b(h) for b in self.branches]


class FuseFLModel(nn.Module):
    """A client's model at stage k (k fused blocks + own blocks k…K−1) or, with k = K, the global model.

    ``forward(x)``: fused blocks in order (the first takes ``x``, each later branch reads
    the previous block's M outputs through its adaptor); then either the client's adaptor
    and own blocks, or — when every block is fused — the mean of the M flattened outputs;
    then the classifier.
    """

    def __init__(
        self, fused: list[FusedBlock], adaptor: Adaptor | None, local_blocks: list[nn.Module], classifier: nn.Linear
    ) -> None:
        super().__init__()
        self.fused = nn.ModuleList(fused)
        self.adaptor = adaptor
        self.local_blocks = nn.ModuleList(local_blocks)
        self.classifier = classifier
        for p in self.fused.parameters():
            p.requires_grad_(False)

    @property
    def stage(self) -> int:
        return len(self.fused)

    def features(self, x: Float[Tensor, " batch *shape"]) -> Float[Tensor, " batch feat"]:
        h: Tensor | list[Tensor] = x
        for fb in self.fused:
            h = fb(h)
        if len(self.local_blocks) == 0:
            return torch.stack([t.flatten(1) for t in h]).mean(0)  # type: ignore[union-attr]
        if self.adaptor is not None:
            h = self.adaptor(h)  # type: ignore[arg-type]
        for b in self.local_blocks:
            h = b(h)
        return h.flatten(1)  # type: ignore[union-attr]

    def forward(self, x: Float[Tensor, " batch *shape"]) -> Float[Tensor, " batch classes"]:
        return self.classifier(self.features(x))


def _spatial(cfg: FLConfig, input_shape: tuple[int, ...]) -> bool:
    return cfg.model_kind(input_shape) == "cnn"


def _make_adaptor(cfg: FLConfig, input_shape: tuple[int, ...], channels: int) -> Adaptor:
    return Adaptor(cfg.adaptor, channels, cfg.clients, _spatial(cfg, input_shape))


def stage_model(cfg: FLConfig, input_shape: tuple[int, ...], num_classes: int, stage: int) -> FuseFLModel:
    """The architecture of a stage-``stage`` model (weights from the run's initial model)."""
    base = build_model(cfg, input_shape, num_classes)
    K = base.n_blocks
    fused = []
    for k in range(stage):
        branches = []
        for _ in range(cfg.clients):
            ad = _make_adaptor(cfg, input_shape, base.block_channels[k - 1]) if k > 0 else None
            branches.append(Branch(copy.deepcopy(base.blocks[k]), ad))
        fused.append(FusedBlock(branches))
    adaptor = _make_adaptor(cfg, input_shape, base.block_channels[stage - 1]) if 0 < stage < K else None
    local = [base.blocks[k] for k in range(stage, K)]
    return FuseFLModel(fused, adaptor, local, base.classifier)


def branch_model(cfg: FLConfig, input_shape: tuple[int, ...], num_classes: int, k: int) -> Branch:
    base = build_model(cfg, input_shape, num_classes)
    return Branch(base.blocks[k], _make_adaptor(cfg, input_shape, base.block_channels[k - 1]) if k > 0 else None)


def fused_block_model(cfg: FLConfig, input_shape: tuple[int, ...], num_classes: int, k: int) -> FusedBlock:
    return FusedBlock([branch_model(cfg, input_shape, num_classes, k) for _ in range(cfg.clients)])


def _sub(d: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)}


def _prefixed(d: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in d.items()}


def advance(model: FuseFLModel, fused_block: FusedBlock, new_adaptor: Adaptor | None) -> FuseFLModel:
    """Replace the client's own block k by the fused block k; its block k+1 gets ``new_adaptor``."""
    return FuseFLModel(list(model.fused) + [fused_block], new_adaptor, list(model.local_blocks)[1:], model.classifier)


class _Upper(nn.Module):
    """The trainable part of a stage model, fed with the (frozen, precomputed) outputs of its fused blocks."""

    def __init__(self, model: FuseFLModel) -> None:
        super().__init__()
        self.adaptor, self.local_blocks, self.classifier = model.adaptor, model.local_blocks, model.classifier

    def forward(self, z: Float[Tensor, " batch branches *feat"]) -> Float[Tensor, " batch classes"]:
        h = self.adaptor(list(z.unbind(1))) if self.adaptor is not None else z
        for b in self.local_blocks:
            h = b(h)
        return self.classifier(h.flatten(1))


def _train_stage(model: FuseFLModel, env: ClientEnv, seed: int) -> float:
    """Local training of a stage model; the frozen fused blocks run once per sample, not once per epoch."""
    cfg = env.cfg
    if len(model.fused) == 0:
        return train_local(model, env.x, env.y, cfg.local_epochs, cfg.batch_size, cfg.lr, seed)
    with torch.no_grad():
        outs = []
        for i in range(0, len(env.x), 256):
            h: Tensor | list[Tensor] = env.x[i : i + 256]
            for fb in model.fused:
                h = fb(h)
            outs.append(torch.stack(h, dim=1))  # type: ignore[arg-type]
    return train_local(_Upper(model), torch.cat(outs), env.y, cfg.local_epochs, cfg.batch_size, cfg.lr, seed)


@client_action("fusefl_stage")
def client_stage(task: Task, env: ClientEnv) -> Reply:
    """Client side of FuseFL stage k (``task.config["stage"]``).

    Stage 0 starts from the server's initial model (``task.arrays``); stage k ≥ 1 receives
    fused block k−1 (``task.arrays``), plugs it in under its own model kept in
    ``env.state``, trains, and uploads branch (k, m) (+ the classifier after the last stage).
    """
    cfg, k = env.cfg, int(task.config["stage"])
    shape, C = env.input_shape, env.num_classes
    if k == 0:
        model = stage_model(cfg, shape, C, 0)
        model.load_state_dict(task.arrays)
    else:
        held = int(env.state.get("stage", torch.tensor(-1)))
        if held != k - 1:
            raise HeadscopeError(f"client {env.cid} got FuseFL stage {k} but holds stage {held}")
        prev = stage_model(cfg, shape, C, k - 1)
        prev.load_state_dict(_sub(env.state, "model."))
        fb = fused_block_model(cfg, shape, C, k - 1)
        fb.load_state_dict(task.arrays)
        model = advance(prev, fb, stage_model(cfg, shape, C, k).adaptor)
    loss = _train_stage(model, env, client_seed(cfg, env.cid, k))
    env.state.clear()
    env.state.update(_prefixed(state_of(model), "model."))
    env.state["stage"] = torch.tensor(k)
    up = _prefixed(state_of(Branch(model.local_blocks[0], model.adaptor)), "branch.")
    if k == len(model.fused) + len(model.local_blocks) - 1:
        up.update(_prefixed(state_of(model.classifier), "classifier."))
    return Reply(arrays=up, metrics={"num_examples": float(len(env.x)), "train_loss": loss})


@torch.no_grad()
def class_stats(features: Float[Tensor, " n d"], labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class count ``[C]``, mean ``[C, d]`` and population covariance ``[C, d, d]`` (zeros where empty)."""
    d = features.shape[1]
    counts = torch.zeros(num_classes, dtype=torch.float64)
    means = torch.zeros(num_classes, d, dtype=torch.float64)
    covs = torch.zeros(num_classes, d, d, dtype=torch.float64)
    f = features.double()
    for c in range(num_classes):
        fc = f[labels == c]
        counts[c] = len(fc)
        if len(fc):
            means[c] = fc.mean(0)
            z = fc - means[c]
            covs[c] = z.T @ z / len(fc)
    return counts, means, covs


def pool_stats(counts: list[Tensor], means: list[Tensor], covs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Pool per-client class statistics into the union's count, mean and population covariance.

    ``N_c = Σ n_mc``, ``μ_c = Σ n_mc μ_mc / N_c``,
    ``Σ_c = Σ_m n_mc (Σ_mc + μ_mc μ_mcᵀ) / N_c − μ_c μ_cᵀ`` (CCVR, Luo et al. 2021, §4).
    """
    n = torch.stack(counts)  # [M, C]
    mu = torch.stack(means)  # [M, C, d]
    cov = torch.stack(covs)  # [M, C, d, d]
    N = n.sum(0)  # [C]
    safe = N.clamp_min(1)
    mean = (n[..., None] * mu).sum(0) / safe[:, None]
    second = (n[..., None, None] * (cov + mu[..., :, None] * mu[..., None, :])).sum(0) / safe[:, None, None]
    pooled = second - mean[:, :, None] * mean[:, None, :]
    return N, mean, pooled


@client_action("fusefl_ccvr")
def client_ccvr(task: Task, env: ClientEnv) -> Reply:
    """Client side of CCVR: plug in the last fused block; send per-class feature statistics of the fused model."""
    cfg, shape, C = env.cfg, env.input_shape, env.num_classes
    K = int(task.config["n_blocks"])
    prev = stage_model(cfg, shape, C, K - 1)
    prev.load_state_dict(_sub(env.state, "model."))
    fb = fused_block_model(cfg, shape, C, K - 1)
    fb.load_state_dict(task.arrays)
    glob = advance(prev, fb, None).eval()
    with torch.no_grad():
        feats = torch.cat([glob.features(env.x[i : i + 512]) for i in range(0, len(env.x), 512)])
    n, mu, cov = class_stats(feats, env.y, C)
    return Reply(arrays={"counts": n.float(), "means": mu.float(), "covs": cov.float()})


def calibrate(
    classifier: nn.Linear,
    N: Tensor,
    mean: Tensor,
    cov: Tensor,
    per_class: int,
    lr: float,
    seed: int,
    batch_size: int = 128,
) -> None:
    """CCVR: sample ``per_class`` virtual features from N(μ_c, Σ_c) per seen class; one SGD pass on the classifier."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(len(N)):
        if N[c] < 1:
            continue
        sym = (0.5 * (cov[c] + cov[c].T)).double().numpy()
        s = rng.multivariate_normal(mean[c].double().numpy(), sym, size=per_class, method="eigh", check_valid="ignore")
        xs.append(torch.from_numpy(s).float())
        ys.append(torch.full((per_class,), c, dtype=torch.long))
    x, y = torch.cat(xs), torch.cat(ys)
    perm = torch.from_numpy(rng.permutation(len(x)))
    opt = torch.optim.SGD(classifier.parameters(), lr=lr)
    for i in range(0, len(x), batch_size):
        idx = perm[i : i + batch_size]
        loss = nn.functional.cross_entropy(classifier(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program of FuseFL: K fusion stages, classifier averaging, CCVR calibration."""
    if cfg.adaptor not in ADAPTORS:
        raise HeadscopeError(f"unknown FuseFL adaptor {cfg.adaptor!r}; choose one of {', '.join(ADAPTORS)}")
    shape, C, M = env.input_shape, env.num_classes, cfg.clients
    K = build_model(cfg, shape, C).n_blocks
    fused: list[FusedBlock] = []
    classifiers: list[dict[str, Tensor]] = []
    init = state_of(stage_model(cfg, shape, C, 0))
    for k in range(K):
        arrays = init if k == 0 else state_of(fused[-1])
        replies = yield {m: Task("fusefl_stage", arrays, {"stage": k}) for m in range(M)}
        fb = fused_block_model(cfg, shape, C, k)
        for m in range(M):
            fb.branches[m].load_state_dict(_sub(replies[m].arrays, "branch."))
        fused.append(fb)
        if k == K - 1:
            classifiers = [_sub(replies[m].arrays, "classifier.") for m in range(M)]
    glob = FuseFLModel(fused, None, [], nn.Linear(classifiers[0]["weight"].shape[1], C))
    with torch.no_grad():
        for name, p in glob.classifier.named_parameters():
            p.copy_(torch.stack([c[name] for c in classifiers]).mean(0))
    extra: dict[str, float] = {}
    if cfg.ccvr_samples > 0:
        replies = yield {m: Task("fusefl_ccvr", state_of(fused[-1]), {"n_blocks": K}) for m in range(M)}
        extra["ccvr_up_bytes"] = float(sum(4 * sum(t.numel() for t in r.arrays.values()) for r in replies.values()))
        N, mean, cov = pool_stats(
            *[[replies[m].arrays[key].double() for m in range(M)] for key in ("counts", "means", "covs")]
        )
        glob.eval()
        calibrate(glob.classifier, N, mean, cov, cfg.ccvr_samples, cfg.lr, seed=cfg.seed * 7 + 1)
    return ServerResult(glob.eval(), extra)
