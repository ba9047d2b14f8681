"""LSNet: parameter budget, structure, routing attention against a dense reference, training step."""

from __future__ import annotations

import pytest
import torch

from headscope.common import HeadscopeError
from vision.lsnet import BiLevelRoutingAttention, LSNet, lsnet_loss, train_lsnet, used_parameter_count

torch.set_num_threads(1)


def test_used_parameters_within_7k_to_8_5k_and_match_closed_form() -> None:
    model = LSNet()
    n_used = used_parameter_count(model, size=32)
    # per branch: per-channel 1x1 convs 3·(16+16); rgb 3x3 conv 3·3·9+3;
    # attention: to_q 12·48 + BN 2·48, to_kv 12·60 + BN 2·60, dwconv5 12·25+12; fuse 51·32+32 + 32·3+3
    branch = 3 * 32 + (81 + 3) + (12 * 48 + 96 + 12 * 60 + 120 + 12 * 25 + 12) + (51 * 32 + 32 + 32 * 3 + 3)
    assert n_used == 2 * branch
    assert 7000 <= n_used <= 8500
    assert n_used == sum(p.numel() for p in model.parameters())  # nothing unused is kept


def test_output_is_input_plus_compensation_minus_overexposure() -> None:
    torch.manual_seed(0)
    model = LSNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x + model.compensation(x) - model.overexposure(x))
        # zeroing the last conv of both branches (SiLU(0) = 0) makes LSNet the identity
        for br in (model.compensation, model.overexposure):
            br.fuse[1][0].weight.zero_()
            br.fuse[1][0].bias.zero_()
        torch.testing.assert_close(model(x), x)


def _dense_reference(attn: BiLevelRoutingAttention, x: torch.Tensor) -> torch.Tensor:
    """Routing attention written with explicit loops over windows (no gather tricks), for one image."""
    nw, topk, m = attn.n_win, attn.topk, attn.num_heads
    q, kv = attn.to_q(x)[0], attn.to_kv(x)[0]
    k, v = kv[: attn.qk_dim], kv[attn.qk_dim :]
    H, W = x.shape[-2:]
    hw, ww = H // nw, W // nw
    wins = [(j, i) for j in range(nw) for i in range(nw)]

    def pix(t, j, i):
        return t[:, j * hw : (j + 1) * hw, i * ww : (i + 1) * ww].reshape(t.shape[0], -1).T

    qm = torch.stack([pix(q, j, i).mean(0) for j, i in wins])
    km = torch.stack([pix(k, j, i).mean(0) for j, i in wins])
    route = torch.topk(qm @ km.T, topk, dim=-1).indices
    out = torch.zeros(attn.dim, H, W)
    dq, dv = attn.qk_dim // m, attn.dim // m
    for w, (j, i) in enumerate(wins):
        qp = pix(q, j, i)
        kp = torch.cat([pix(k, *wins[r]) for r in route[w].tolist()])
        vp = torch.cat([pix(v, *wins[r]) for r in route[w].tolist()])
        heads = []
        for h in range(m):
            a = torch.softmax(
                qp[:, h * dq : (h + 1) * dq] @ kp[:, h * dq : (h + 1) * dq].T * attn.qk_dim**-0.5, dim=-1
            )
            heads.append(a @ vp[:, h * dv : (h + 1) * dv])
        out[:, j * hw : (j + 1) * hw, i * ww : (i + 1) * ww] = torch.cat(heads, 1).T.reshape(attn.dim, hw, ww)
    return out + attn.lepe(v.unsqueeze(0))[0]


def test_routing_attention_matches_loop_reference() -> None:
    torch.manual_seed(1)
    attn = BiLevelRoutingAttention(dim=12, qk_dim=48, num_heads=2, n_win=4, topk=3).eval()
    x = torch.randn(1, 12, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(attn(x)[0], _dense_reference(attn, x), rtol=1e-4, atol=1e-5)


def test_routing_with_all_windows_is_full_attention() -> None:
    """topk = all windows: every query attends to every pixel.

    So the output is permutation-equivariant in the windows' order.
    """
    torch.manual_seed(2)
    attn = BiLevelRoutingAttention(dim=4, qk_dim=4, num_heads=1, n_win=2, topk=4, side_dwconv=1).eval()
    with torch.no_grad():
        attn.lepe.weight.zero_()
        attn.lepe.bias.zero_()
        x = torch.randn(1, 4, 4, 4)
        q = attn.to_q(x)[0].reshape(4, -1).T
        kv = attn.to_kv(x)[0].reshape(8, -1).T
        full = torch.softmax(q @ kv[:, :4].T * 0.5, -1) @ kv[:, 4:]
        torch.testing.assert_close(attn(x)[0].reshape(4, -1).T, full, rtol=1e-4, atol=1e-5)


def test_sizes_not_divisible_by_windows_are_padded_and_cropped() -> None:
    model = LSNet()
    assert model(torch.rand(1, 3, 36, 50)).shape == (1, 3, 36, 50)
    assert LSNet(space_to_depth="official")(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(HeadscopeError, match="even"):
        model(torch.rand(1, 3, 33, 32))


def test_loss_is_zero_for_identical_images_and_training_reduces_it() -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 3, 32, 32)
    assert float(lsnet_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    target = (x * 0.6 + 0.2).clamp(0, 1)
    model = LSNet()
    losses = train_lsnet(model, x, target, epochs=4, lr=3e-3, batch_size=2, show_progress=False)
    assert losses[-1] < losses[0]
