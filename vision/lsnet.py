"""LSNet: "A 7K Parameter Model for Underwater Image Enhancement based on Transmission Map
Prior" (Zhou et al., 2024, arXiv:2405.16197), re-implemented from the paper and the
official code (FuhengZhou/LSNet).

Output ``J = I + D(I) − O(I)``: a compensation branch ``D`` and an over-exposure branch
``O`` of the same structure (paper §3.1). Each branch:

1. global path: conv 3×3 (3→3) + SiLU; space-to-depth 2×2 (12 channels at H/2 × W/2);
   top-k bi-level routing attention (BiFormer, Zhu et al. CVPR 2023: the feature map is
   cut into a 16×16 grid of windows; windows are routed by the dot product of their mean
   query and mean key, each query window attends over the pixels of its top-32 windows,
   2 heads, plus a depthwise 5×5 conv on V as local context); depth-to-space back to H×W;
2. transmission-map prior path (paper §3.2): a 1×1 conv + SiLU per colour channel
   (1→16 each), since each channel attenuates with its own ``t_c = exp(−β_c d)``;
3. fusion: concatenation (16·3 + 3 = 51 channels) and two 1×1 convs + SiLU (51→32→3).

Parameters: 3,767 per branch, 7,534 in total (the official model also defines two unused
modules, ``conv5`` and ``finallconv``, which are left out here).

The official space-to-depth is ``rearrange('b c (h1 h) (w1 w) -> b (h1 w1 c) h w')``
(four image *quadrants* stacked as channels) followed by ``PixelShuffle(2)``, which is not
its inverse, so the global path's output is spatially permuted; the paper describes a
2×2 space-to-depth. ``space_to_depth="pixel"`` (default) uses ``pixel_unshuffle`` /
``pixel_shuffle`` (exact inverses); ``"official"`` reproduces the released code.

The repository has no training script or loss; ``train_lsnet`` uses ``L1 + (1 − SSIM)``
(our choice, stated here and in docs/vision.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from headscope.common import HeadscopeError, progress, seed_everything

__all__ = ["BiLevelRoutingAttention", "LSNet", "lsnet_loss", "train_lsnet", "used_parameter_count"]


class _ConvSiLU(nn.Sequential):
    """``Conv2d(k, 'same' padding, bias) → SiLU`` (the official ``Conv`` block)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=True), nn.SiLU())


class _Conv1x1BN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class BiLevelRoutingAttention(nn.Module):
    """Top-k bi-level routing attention on an ``(N, C, H, W)`` map (BiFormer §3.2, LSNet's settings).

    1. ``q = BN(W_q x)``, ``[k, v] = BN(W_kv x)`` (1×1 convs); pad H, W to multiples of ``n_win``.
    2. Region routing: ``A_r = (mean_w q)(mean_w k)ᵀ · s`` over the ``n_win²`` windows,
       ``I_r = topk(A_r, topk)`` (not differentiated).
    3. Token attention: each window's pixels attend (softmax, ``heads`` heads, scale
       ``s = qk_dim^-½`` as in the official code) over all pixels of its ``topk`` routed windows.
    4. Output ``= attention + DWConv5×5(v)`` (local context enhancement), cropped back.
    """

    def __init__(
        self,
        dim: int = 12,
        qk_dim: int = 48,
        num_heads: int = 2,
        n_win: int = 16,
        topk: int = 32,
        side_dwconv: int = 5,
    ) -> None:
        super().__init__()
        if qk_dim % num_heads or dim % num_heads:
            raise HeadscopeError(f"qk_dim ({qk_dim}) and dim ({dim}) must be divisible by num_heads ({num_heads})")
        if topk > n_win * n_win:
            raise HeadscopeError(f"topk ({topk}) cannot exceed the number of windows n_win² ({n_win * n_win})")
        self.dim, self.qk_dim, self.num_heads, self.n_win, self.topk = dim, qk_dim, num_heads, n_win, topk
        self.scale = qk_dim**-0.5
        self.to_q = _Conv1x1BN(dim, qk_dim)
        self.to_kv = _Conv1x1BN(dim, qk_dim + dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def route(self, q_win: Float[Tensor, " N P C"], k_win: Float[Tensor, " N P C"]) -> tuple[Tensor, Tensor]:
        """Top-k windows per query window: ``(logits of the chosen, indices)``, both ``(N, P, topk)``."""
        logits = (q_win.detach() * self.scale) @ k_win.detach().transpose(-2, -1)
        return torch.topk(logits, self.topk, dim=-1)

    def forward(self, x: Float[Tensor, " N C H W"]) -> Float[Tensor, " N C H W"]:
        n, c, h_in, w_in = x.shape
        if c != self.dim:
            raise HeadscopeError(f"BiLevelRoutingAttention expects {self.dim} channels, got {c}")
        nw = self.n_win
        pad_b, pad_r = (-h_in) % nw, (-w_in) % nw
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        H, W = x.shape[-2:]
        q = self.to_q(x)
        kv = self.to_kv(x)

        def win(t: Tensor) -> Tensor:
            return rearrange(t, "n c (j h) (i w) -> n (j i) (h w) c", j=nw, i=nw)

        q_pix, kv_pix = win(q), win(kv)  # (N, P, w2, C)
        k_pix, v_pix = kv_pix.split([self.qk_dim, self.dim], dim=-1)
        _, r_idx = self.route(q_pix.mean(2), k_pix.mean(2))  # (N, P, topk)
        bidx = torch.arange(n, device=x.device).view(n, 1, 1)
        k_sel = k_pix[bidx, r_idx]  # (N, P, topk, w2, Cqk)
        v_sel = v_pix[bidx, r_idx]  # (N, P, topk, w2, C)
        m = self.num_heads
        qh = rearrange(q_pix, "n p w2 (m c) -> (n p) m w2 c", m=m)
        kh = rearrange(k_sel, "n p k w2 (m c) -> (n p) m (k w2) c", m=m)
        vh = rearrange(v_sel, "n p k w2 (m c) -> (n p) m (k w2) c", m=m)
        attn = torch.softmax((qh * self.scale) @ kh.transpose(-2, -1), dim=-1)
        out = rearrange(attn @ vh, "(n j i) m (h w) c -> n (m c) (j h) (i w)", j=nw, i=nw, h=H // nw, w=W // nw)
        out = out + self.lepe(kv[:, self.qk_dim :])
        return out[:, :, :h_in, :w_in]


class _Branch(nn.Module):
    """One LSNet branch (compensation ``D`` or over-exposure ``O``)."""

    def __init__(self, space_to_depth: str, n_win: int, topk: int) -> None:
        super().__init__()
        self.s2d = space_to_depth
        self.rgb = _ConvSiLU(3, 3, 3)
        self.attn = BiLevelRoutingAttention(12, 48, 2, n_win, topk, 5)
        self.r, self.g, self.b = _ConvSiLU(1, 16), _ConvSiLU(1, 16), _ConvSiLU(1, 16)
        self.fuse = nn.Sequential(_ConvSiLU(51, 32), _ConvSiLU(32, 3))

    def forward(self, x: Float[Tensor, " N 3 H W"]) -> Float[Tensor, " N 3 H W"]:
        y = self.rgb(x)
        if self.s2d == "pixel":
            y = F.pixel_shuffle(self.attn(F.pixel_unshuffle(y, 2)), 2)
        else:  # the released code: quadrants as channels, then PixelShuffle
            y = F.pixel_shuffle(self.attn(rearrange(y, "b c (h1 h) (w1 w) -> b (h1 w1 c) h w", h1=2, w1=2)), 2)
        xr, xg, xb = x.split(1, dim=1)
        return self.fuse(torch.cat([self.r(xr), self.g(xg), self.b(xb), y], dim=1))


class LSNet(nn.Module):
    """``(N, 3, H, W) in [0, 1] -> (N, 3, H, W)``: ``J = I + D(I) − O(I)`` (paper Eq. 1). H, W must be even."""

    def __init__(self, space_to_depth: str = "pixel", n_win: int = 16, topk: int = 32) -> None:
        super().__init__()
        if space_to_depth not in ("pixel", "official"):
            raise HeadscopeError(f"space_to_depth must be 'pixel' or 'official', got {space_to_depth!r}")
        self.compensation = _Branch(space_to_depth, n_win, topk)
        self.overexposure = _Branch(space_to_depth, n_win, topk)
        for mod in self.modules():  # the official initialisation
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, x: Float[Tensor, " N 3 H W"]) -> Float[Tensor, " N 3 H W"]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % 2 or x.shape[-2] % 2:
            raise HeadscopeError(
                f"LSNet expects RGB images (N, 3, H, W) with even H and W, got {tuple(x.shape)}; resize to 256×256"
            )
        return x + self.compensation(x) - self.overexposure(x)

    @torch.no_grad()
    def enhance(self, x: Float[Tensor, " N 3 H W"]) -> Float[Tensor, " N 3 H W"]:
        """Inference: eval mode, output clipped to [0, 1] (as the official ``predict.py``)."""
        self.eval()
        return self(x).clamp(0, 1)


def used_parameter_count(model: nn.Module, size: int = 64) -> int:
    """Number of parameter entries that receive a gradient from one forward/backward pass."""
    model.zero_grad(set_to_none=True)
    was = model.training
    model.train()
    model(torch.rand(1, 3, size, size)).square().sum().backward()
    n = sum(p.numel() for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return n


def lsnet_loss(pred: Float[Tensor, " N 3 H W"], target: Float[Tensor, " N 3 H W"], ssim_weight: float = 1.0) -> Tensor:
    """``L1 + w·(1 − SSIM)`` (SSIM: Gaussian window 11, σ 1.5, data range 1; ``vision.metrics.ssim_map``)."""
    from .metrics import ssim_map

    return F.l1_loss(pred, target) + ssim_weight * (1 - ssim_map(pred, target).mean())


def train_lsnet(
    model: LSNet,
    inputs: Float[Tensor, " N 3 H W"],
    targets: Float[Tensor, " N 3 H W"],
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    show_progress: bool = True,
) -> list[float]:
    """Adam + cosine decay on ``lsnet_loss``; returns the per-epoch mean loss."""
    if inputs.shape != targets.shape or inputs.ndim != 4:
        raise HeadscopeError(
            "inputs and targets must be matching (N, 3, H, W) tensors, "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if epochs < 1:
        raise HeadscopeError(f"epochs must be >= 1, got {epochs}")
    gen = seed_everything(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    losses = []
    it = progress(range(epochs), desc="train LSNet") if show_progress else range(epochs)
    for _ in it:
        perm = torch.randperm(len(inputs), generator=gen)
        tot = 0.0
        for i in range(0, len(inputs), batch_size):
            idx = perm[i : i + batch_size]
            loss = lsnet_loss(model(inputs[idx]), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / len(inputs))
    model.eval()
    return losses
