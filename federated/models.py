"""Small block-structured networks whose cut points are explicit (FuseFL §3.2 needs them).

A :class:`BlockNet` is ``classifier(flatten(block_{K-1}(… block_0(x))))``. FuseFL fuses
one block per stage; the other algorithms use the network as a whole.

- ``cnn``: for image inputs ``[C, H, W]``: block k = conv3×3 → ReLU (→ 2×2 max-pool for
  0 < k < K−1; global average pool after the last block), widths ``w, 2w, 4w, …``.
- ``mlp``: for vector inputs ``[D]`` (or anything, flattened): block k = Linear → ReLU.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from headscope.common import HeadscopeError

MODELS = ("cnn", "mlp")


class BlockNet(nn.Module):
    """``blocks`` (the cut points of the network) followed by a linear classifier.

    ``block_channels[k]`` is the channel (or feature) count that block k outputs; it sizes
    FuseFL's 1×1-conv adaptors.
    """

    def __init__(self, blocks: list[nn.Module], block_channels: list[int], feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.block_channels = list(block_channels)
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def features(self, x: Float[Tensor, " batch *shape"]) -> Float[Tensor, " batch feat"]:
        for b in self.blocks:
            x = b(x)
        return x.flatten(1)

    def forward(self, x: Float[Tensor, " batch *shape"]) -> Float[Tensor, " batch classes"]:
        return self.classifier(self.features(x))


def make_model(
    kind: str, input_shape: tuple[int, ...], num_classes: int, width: int = 16, n_blocks: int = 3
) -> BlockNet:
    """Build a ``kind`` network (``cnn`` or ``mlp``) of ``n_blocks`` blocks for ``input_shape``."""
    if kind not in MODELS:
        raise HeadscopeError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    if n_blocks < 1:
        raise HeadscopeError(f"a model needs at least one block, got n_blocks={n_blocks}")
    if kind == "cnn":
        if len(input_shape) != 3:
            raise HeadscopeError(f"the cnn needs image inputs [C, H, W], got shape {input_shape}; use --model mlp")
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        chans: list[int] = []
        for k in range(n_blocks):
            c_out = width * 2**k
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if k == n_blocks - 1:
                layers.append(nn.AdaptiveAvgPool2d(1))
                h, w = 1, 1
            elif k >= 1 and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            blocks.append(nn.Sequential(*layers))
            chans.append(c_out)
            c_in = c_out
        return BlockNet(blocks, chans, c_in * h * w, num_classes)
    d_in = 1
    for s in input_shape:
        d_in *= s
    hidden = width * 8
    blocks = []
    for k in range(n_blocks):
        layers = [nn.Flatten()] if k == 0 else []
        layers += [nn.Linear(d_in if k == 0 else hidden, hidden), nn.ReLU()]
        blocks.append(nn.Sequential(*layers))
    return BlockNet(blocks, [hidden] * n_blocks, hidden, num_classes)


def state_bytes(arrays: dict[str, Tensor]) -> int:
    """Bytes of the tensors in ``arrays`` (what crosses the network, without framing)."""
    return int(sum(t.numel() * t.element_size() for t in arrays.values()))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / max(1, len(x))
