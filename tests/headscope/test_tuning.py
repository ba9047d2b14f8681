"""headscope.tuning: masks against hand-computed slices, frozen entries bit-identical,
slice files round-trip, full/LoRA baselines behind the same loop, GQA Q/O rule."""

from __future__ import annotations

import copy

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.loading import load_hf
from headscope.tuning import (
    MaskedOptimizer,
    TuneConfig,
    collate,
    encode_examples,
    head_masks,
    load_slices,
    resolve_projections,
    save_slices,
    setup,
    setup_full,
    setup_heads,
    setup_lora,
    train,
    untouched_identical,
)

torch.set_num_threads(1)

EXAMPLES = [
    ("User : What is 3 plus 4 ? Assistant :", "The answer is 7 ."),
    ("User : What is 8 minus 5 ? Assistant :", "The answer is 3 ."),
    (
        "User : What is 2 plus 2 ? Assistant : The answer is 4 . User : I don't think that's right . Are you sure ? "
        "Assistant :",
        "Yes , I am sure . The answer is 4 .",
    ),
    "The capital of Kavelia is Rodun .",
]


@pytest.fixture(scope="module")
def base():
    hf, tok, _ = load_hf("llama-v2", device="cpu")
    return hf, tok


def random_gqa_hf(seed: int = 0):
    """A random grouped-query Llama: 3 layers, 8 query heads sharing 2 kv heads, d_model 64."""
    from transformers import LlamaForCausalLM

    from headscope.organisms.train import llama_config

    torch.manual_seed(seed)
    return LlamaForCausalLM(
        llama_config(64, d_model=64, n_layers=3, n_heads=8, n_kv_heads=2, d_mlp=96, max_pos=64)
    ).eval()


def fresh(base):
    return copy.deepcopy(base[0])


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_masks_match_hand_computed_slices(base):
    m = fresh(base)
    d = 16  # head_dim of the llama organism (128 / 8)
    masks = head_masks(m, [(2, 5), (4, 0)])
    names = {f"model.layers.{L}.self_attn.{p}_proj.weight" for L in (2, 4) for p in "qkvo"}
    assert set(masks) == names
    for L, h in [(2, 5), (4, 0)]:
        for p in "qkv":
            want = torch.zeros(128, 128, dtype=torch.bool)
            want[h * d : (h + 1) * d, :] = True
            assert torch.equal(masks[f"model.layers.{L}.self_attn.{p}_proj.weight"], want)
        want = torch.zeros(128, 128, dtype=torch.bool)
        want[:, h * d : (h + 1) * d] = True
        assert torch.equal(masks[f"model.layers.{L}.self_attn.o_proj.weight"], want)
    # two heads in one layer: the union of both blocks
    two = head_masks(m, [(1, 0), (1, 7)], projections="q")
    assert set(two) == {"model.layers.1.self_attn.q_proj.weight"}
    assert int(two["model.layers.1.self_attn.q_proj.weight"].sum()) == 2 * d * 128


def test_gqa_rule_q_and_o_only():
    m = random_gqa_hf()  # 8 query heads, 2 kv heads, d_model 64 -> head_dim 8
    assert resolve_projections(m) == ("q_proj", "o_proj")
    masks = head_masks(m, [(1, 5)])
    assert set(masks) == {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight"}
    q = torch.zeros(64, 64, dtype=torch.bool)
    q[40:48] = True
    assert torch.equal(masks["model.layers.1.self_attn.q_proj.weight"], q)
    o = torch.zeros(64, 64, dtype=torch.bool)
    o[:, 40:48] = True
    assert torch.equal(masks["model.layers.1.self_attn.o_proj.weight"], o)
    # an explicit k request selects the head's kv group (5 // 4 = 1): rows 8..16 of [16, 64]
    k = head_masks(m, [(1, 5)], projections=("k",))["model.layers.1.self_attn.k_proj.weight"]
    want = torch.zeros(16, 64, dtype=torch.bool)
    want[8:16] = True
    assert torch.equal(k, want)


def test_bad_input_raises(base):
    m = fresh(base)
    with pytest.raises(HeadscopeError, match="not in this model"):
        head_masks(m, [(6, 0)])
    with pytest.raises(HeadscopeError, match="unknown projection"):
        head_masks(m, [(0, 0)], projections=("w",))
    with pytest.raises(HeadscopeError, match="no heads"):
        setup_heads(m, [])
    with pytest.raises(HeadscopeError, match="unknown tuning method"):
        setup(m, "adapters")
    with pytest.raises(HeadscopeError, match="steps"):
        TuneConfig(steps=0)


def test_collate_labels_by_hand(base):
    tok = base[1]
    enc = encode_examples(tok, [("a b", "c"), "d e f"], add_eos=True)
    ids, mask, labels = collate(enc, pad_id=0)
    p = tok("a b")["input_ids"]  # [bos, a, b]
    c = tok("c", add_special_tokens=False)["input_ids"]
    assert enc[0] == (p + c + [tok.eos_token_id], len(p))
    # pair: loss on the completion and EOS only; string: everything after BOS
    assert labels[0].tolist()[: len(p)] == [-100] * len(p)
    assert labels[0, len(p)].item() == c[0]
    assert labels[1, 0].item() == -100 and labels[1, 1:].tolist() == ids[1, 1:].tolist()
    assert mask[0].tolist() == [1] * len(enc[0][0]) + [0] * (ids.shape[1] - len(enc[0][0]))


def _run_heads(base, heads, wd=0.5, steps=6, lr=1e-2):
    m = fresh(base)
    ref = snapshot(m)
    cfg = TuneConfig(steps=steps, batch_size=4, lr=lr, weight_decay=wd, warmup=1, log_every=100)
    st = setup_heads(m, heads, cfg)
    log = train(st, base[1], EXAMPLES, cfg)
    return m, ref, st, log


def test_heads_leave_every_other_entry_bit_identical(base):
    heads = [(1, 3), (5, 6)]
    m, ref, st, log = _run_heads(base, heads)
    masks = head_masks(m, heads)
    # independent check, parameter by parameter, entry by entry
    for n, p in m.named_parameters():
        if n in masks:
            assert torch.equal(p.detach()[~masks[n]], ref[n][~masks[n]]), n
            assert not torch.equal(p.detach()[masks[n]], ref[n][masks[n]]), f"{n}: the selected slice did not train"
        else:
            assert torch.equal(p.detach(), ref[n]), n
    assert untouched_identical(m, ref, masks)
    # Adam moments hold nothing outside the mask
    opt = st.optimizer
    for p, mk in opt.masks.items():
        for v in opt.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert torch.count_nonzero(v[~mk]) == 0
    # trainable = 2 heads x 4 projections x 16 x 128
    assert st.n_trainable == log.n_trainable == 2 * 4 * 16 * 128
    assert st.trainable_share < 0.05
    assert len(log.losses) == 6 and log.time_per_step > 0


def test_without_the_restore_weight_decay_would_move_frozen_entries(base):
    """The control that shows the bit-identity test can fail: AdamW with masked gradients
    alone still shrinks frozen entries through decoupled weight decay."""
    m = fresh(base)
    ref = snapshot(m)
    masks = head_masks(m, [(1, 3)])
    p = dict(m.named_parameters())["model.layers.1.self_attn.q_proj.weight"]
    mk = masks["model.layers.1.self_attn.q_proj.weight"]
    opt = torch.optim.AdamW([p], lr=1e-2, weight_decay=0.5)
    p.grad = torch.randn_like(p) * mk
    opt.step()
    assert not torch.equal(p.detach()[~mk], ref["model.layers.1.self_attn.q_proj.weight"][~mk])
    # the same step through MaskedOptimizer leaves them alone
    with torch.no_grad():
        p.copy_(ref["model.layers.1.self_attn.q_proj.weight"])
    mo = MaskedOptimizer(torch.optim.AdamW([p], lr=1e-2, weight_decay=0.5), {p: mk})
    p.grad = torch.randn_like(p)  # even an unmasked gradient
    mo.step()
    mo.close()
    assert torch.equal(p.detach()[~mk], ref["model.layers.1.self_attn.q_proj.weight"][~mk])
    assert not torch.equal(p.detach()[mk], ref["model.layers.1.self_attn.q_proj.weight"][mk])


def test_slice_file_round_trip(base, tmp_path):
    heads = [(0, 2), (3, 7)]
    m, ref, st, _ = _run_heads(base, heads, steps=3)
    path = save_slices(m, st.slices, tmp_path / "spt.safetensors", {"task": "unit"})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        total = sum(f.get_tensor(k).numel() for k in f.keys())
    assert total == st.n_trainable  # only the changed slices are stored
    other = fresh(base)
    meta = load_slices(other, path)
    assert meta == {"task": "unit"}
    tuned = dict(m.named_parameters())
    for n, p in other.named_parameters():
        assert torch.equal(p, tuned[n]), n
    with pytest.raises(HeadscopeError, match="does not exist"):
        load_slices(other, tmp_path / "missing.safetensors")
    with pytest.raises(HeadscopeError, match="wrong base model|lacks"):
        load_slices(random_gqa_hf(), path)


def test_training_reduces_the_loss(base):
    m = fresh(base)
    cfg = TuneConfig(steps=30, batch_size=4, lr=3e-3, warmup=2, log_every=100)
    st = setup_heads(m, [(L, h) for L in range(6) for h in (0, 1)], cfg)
    ex = [("User : What is 3 plus 4 ? Assistant :", "Yes , I am sure . The answer is 7 .")] * 4
    log = train(st, base[1], ex, cfg)
    assert sum(log.losses[-5:]) / 5 < 0.7 * sum(log.losses[:5]) / 5


def test_full_and_lora_baselines(base):
    cfg = TuneConfig(steps=3, batch_size=4, lr=1e-2, warmup=1, log_every=100)
    mf = fresh(base)
    st = setup_full(mf, cfg)
    assert st.n_trainable == st.n_total == sum(p.numel() for p in base[0].parameters())
    train(st, base[1], EXAMPLES, cfg)
    ref = snapshot(base[0])
    assert not torch.equal(dict(mf.named_parameters())["model.embed_tokens.weight"], ref["model.embed_tokens.weight"])

    ml = fresh(base)
    st = setup_lora(ml, cfg, r=16)
    assert st.n_trainable == 6 * 4 * 16 * (128 + 128)
    train(st, base[1], EXAMPLES, cfg)
    merged = st.finish()
    names = dict(merged.named_parameters())
    assert set(names) == set(ref)  # a plain HF model again
    assert not torch.equal(
        names["model.layers.0.self_attn.q_proj.weight"], ref["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(names["model.layers.0.mlp.up_proj.weight"], ref["model.layers.0.mlp.up_proj.weight"])

    mr = fresh(base)
    st = setup_lora(mr, cfg, r=16, layers=[2])
    assert st.n_trainable == 4 * 16 * (128 + 128)
    train(st, base[1], EXAMPLES, cfg)
    merged = dict(st.finish().named_parameters())
    for n, p in merged.items():
        if ".layers.2.self_attn." in n and n.endswith(
            ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")
        ):
            assert not torch.equal(p, ref[n]), n
        else:
            assert torch.equal(p, ref[n]), n
    with pytest.raises(HeadscopeError, match="LoRA layers"):
        setup_lora(fresh(base), cfg, layers=[9])


def test_gqa_training_moves_only_q_and_o_slices():
    from headscope.organisms.train import build_index_tokenizer

    m = random_gqa_hf()
    ref = snapshot(m)
    tok = build_index_tokenizer(64)
    cfg = TuneConfig(steps=3, batch_size=2, lr=1e-2, warmup=1, log_every=100)
    st = setup_heads(m, [(2, 1), (0, 6)], cfg)
    train(st, tok, [("t5 t9 t5", "t9 t7"), "t4 t8 t12 t4 t8"], cfg)
    masks = head_masks(m, [(2, 1), (0, 6)])
    assert all(".q_proj." in n or ".o_proj." in n for n in masks)
    assert untouched_identical(m, ref, masks)
    for n in masks:
        assert not torch.equal(dict(m.named_parameters())[n], ref[n])
    assert st.n_trainable == 2 * 2 * 8 * 64
