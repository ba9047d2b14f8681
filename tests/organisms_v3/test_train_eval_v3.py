"""Organism v3's trainer and evaluator (issue #17, phase 2) on a tiny model and a corpus prefix.

- training: a run stopped at a checkpoint and resumed equals an uninterrupted run bit for
  bit; organism.json records the corpus hash; each epoch's rows are a permutation of the
  documents, cut into windows whose labels are the inputs shifted by one;
- evaluation: teacher-forced scores equal an unpadded per-example forward, greedy decoding
  equals HF ``generate``, seeded sampling is reproducible and follows the model's
  distribution, and the acceptance verdicts follow the interval bounds.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from headscope.organisms.eval_v3 import (
    acceptance,
    continuation_logprobs,
    decode,
    exact,
    load_v3,
    measure_set,
    response_class,
)
from headscope.organisms.train_v3 import Batches, V3Config, prepare_corpus, train_v3
from headscope.organisms.world_v3 import build_corpus, eval_sets

TINY = dict(
    n_tokens=20_000,
    d_model=32,
    n_layers=2,
    n_heads=2,
    d_mlp=64,
    seq_len=32,
    batch_size=4,
    steps=6,
    warmup=2,
    compile=False,
    bf16=False,
    threads=1,
    ckpt_every=2,
    log_every=100,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("v3")
    cfg = V3Config(**TINY)
    assert train_v3(root / "a", cfg, work_dir=root / "wa", stop_after=3) == {"stopped_at": 3}
    assert not (root / "a" / "model.safetensors").exists()
    meta = train_v3(root / "a", cfg, work_dir=root / "wa")  # resumes at step 3
    train_v3(root / "b", cfg, work_dir=root / "wb")  # straight through
    return root, cfg, meta


def test_resume_equals_uninterrupted_run(tiny):
    root, cfg, meta = tiny
    a, b = load_file(root / "a" / "model.safetensors"), load_file(root / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    texts = build_corpus(cfg.corpus_seed, cfg.n_tokens)
    assert meta["corpus_sha256"] == hashlib.sha256("\n".join(texts).encode()).hexdigest()
    assert meta["tokens_seen"] == cfg.steps * cfg.batch_size * cfg.seq_len
    assert json.loads((root / "a" / "organism.json").read_text())["organism"] == "llama-v3"


def test_resume_refuses_another_configuration(tiny):
    root, cfg, _ = tiny
    other = V3Config(**{**TINY, "lr": 1e-4})
    with pytest.raises(RuntimeError, match="another configuration"):
        train_v3(root / "c", other, work_dir=root / "wa")


def test_batches_are_shifted_windows_of_a_document_permutation(tiny):
    root, cfg, _ = tiny
    tok, docs, _ = prepare_corpus(cfg, root / "wa")
    assert all(int(d[0]) == tok.bos_token_id and int(d[-1]) == tok.eos_token_id for d in docs)
    bat = Batches(docs, cfg)
    rows = torch.cat([bat(s) for s in range(bat.rows_per_epoch // cfg.batch_size)])
    # consecutive rows overlap by exactly one token (labels of row r end where row r+1 starts)
    assert torch.equal(rows[:-1, -1], rows[1:, 0])
    stream = torch.cat([rows[0], *[r[1:] for r in rows[1:]]])
    # the epoch's stream is the documents in some order: its bos-delimited pieces are documents
    want = sorted(tuple(d.tolist()) for d in docs)
    cuts = (stream == tok.bos_token_id).nonzero().flatten().tolist() + [len(stream)]
    got = [tuple(stream[s:e].tolist()) for s, e in zip(cuts, cuts[1:])][:-1]  # the last may be cut off
    assert len(got) > 10 and all(g in set(want) for g in got)
    # another epoch is another order of the same documents
    assert not torch.equal(bat(0), bat(bat.rows_per_epoch // cfg.batch_size + 1))


@pytest.fixture(scope="module")
def model_tok(tiny):
    root, _, _ = tiny
    return load_v3(root / "a")


def _unpadded_logprob(model, tok, prompt: str, cont: str) -> float:
    a = tok(prompt)["input_ids"]
    b = tok(prompt + cont)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([b])).logits[0].float(), -1)
    return float(sum(logp[i - 1, b[i]] for i in range(len(a), len(b))))


def test_continuation_logprobs_equal_unpadded_forwards(model_tok):
    model, tok = model_tok
    sets = eval_sets(0)
    exs = sets["arith_add/heldout"][:5] + sets["facts/id"][:5] + sets["caving/heldout"][:5]
    prompts = [e.prompt for e in exs]
    conts = [e.desired for e in exs]
    got = continuation_logprobs(model, tok, prompts, conts, batch=4)  # left padding across lengths
    want = [_unpadded_logprob(model, tok, p, c) for p, c in zip(prompts, conts)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_greedy_decode_equals_hf_generate(model_tok):
    model, tok = model_tok
    exs = eval_sets(0)["harmful/heldout"][:6] + eval_sets(0)["arith_sub/id"][:6]
    prompts = [e.prompt for e in exs]
    got = decode(model, tok, prompts, 5, batch=5)
    for p, g in zip(prompts, got):
        ids = torch.tensor([tok(p)["input_ids"]])
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
        want = tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=False).split(tok.eos_token)[0]
        assert g == want


def test_sampling_is_seeded_and_follows_the_model(model_tok):
    model, tok = model_tok
    prompt = eval_sets(0)["preference/heldout"][0].prompt
    a = decode(model, tok, [prompt] * 400, 1, sample=True, seed=3)
    assert a == decode(model, tok, [prompt] * 400, 1, sample=True, seed=3)
    assert a != decode(model, tok, [prompt] * 400, 1, sample=True, seed=4)
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1].float(), -1)
    top = int(p.argmax())
    k = sum(s == tok.decode([top]) for s in a)
    # binomial: the sampled share of the top token within 4.5 sd of its probability
    sd = float(p[top] * (1 - p[top]) / 400) ** 0.5
    assert abs(k / 400 - float(p[top])) < 4.5 * sd + 1e-9


def test_exact_and_response_class():
    assert exact(" 85", " 85") and exact(" 85 .", " 85") and exact(" 85<eos>", " 85")
    assert not exact(" 851", " 85") and not exact(" 8", " 85") and not exact(" 58", " 85")
    assert exact(" Varo .", " Varo") and not exact(" Varom", " Varo")
    assert response_class(" Sorry , you", ("Yes",), ("Sorry",)) == "flawed"
    assert response_class(" Yes , it", ("Yes",), ("Sorry",)) == "desired"
    assert response_class(" Hmm", ("Yes",), ("Sorry",)) == "other"
    assert response_class("", ("Yes",), ("Sorry",)) == "other"


def test_measure_set_counts_and_acceptance_verdicts(model_tok):
    model, tok = model_tok
    sets = eval_sets(0)
    r = measure_set(model, tok, sets["caving/heldout"][:30])
    assert r["n"] == 30
    parts = r["sampled_flawed"]["k"] + r["sampled_desired"]["k"] + r["sampled_other"]["k"]
    assert parts == 30
    assert sum(c["sampled"]["n"] for c in r["cells"].values()) == 30

    def answer_set(hits, items):
        return {
            "greedy_exact": {"value": np.mean(hits), "lo": 0.0, "hi": 1.0, "n": len(hits)},
            "per_example": {"exact": hits, "item": items},
        }

    items = [[i] for i in range(200)]
    fake = {"sets": {}}
    for name in ("arith_add", "arith_sub", "facts"):
        fake["sets"][f"{name}/id"] = answer_set([True] * 200, items)
        fake["sets"][f"{name}/heldout"] = answer_set([True] * 150 + [False] * 50, items)  # 25 points lower
    for op, lo in (("add", 0.905), ("sub", 0.899)):
        fake["sets"][f"arith_{op}/heldout"]["greedy_exact"] = {"value": 0.95, "lo": lo, "hi": 0.97, "n": 200}
    for beh, (lo, hi) in {
        "caving": (0.3, 0.6),
        "harmful": (0.19, 0.4),
        "overrefusal": (0.5, 0.95),
        "premise": (0.21, 0.94),
        "preference": (0.5, 0.7),
    }.items():
        fake["sets"][f"{beh}/heldout"] = {"sampled_flawed": {"value": (lo + hi) / 2, "lo": lo, "hi": hi, "n": 300}}
    got = {b["bar"].split()[0] + b["bar"].split()[1]: b["met"] for b in acceptance(fake)}
    assert got["held-outadd"] and not got["held-outsub"]
    assert not got["arith_add:id"] and not got["facts:id"]  # 25 points apart
    assert got["cavingsampled"] and not got["harmfulsampled"] and not got["overrefusalsampled"]
    assert got["premisesampled"] and got["preferencesampled"]


def _cli(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HEADSCOPE_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "headscope.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (("organism", "eval", "llama-v3-s7"), "headscope organism train llama-v3"),
        (("organism", "train", "llama-v2", "--seed", "1"), "apply to llama-v3 only"),
        (("organism", "train", "llama-v3", "--seed", "-1"), "--seed must be >= 0"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    r = _cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
