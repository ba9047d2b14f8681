"""The CLI: the demo job end to end, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from headscope.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HEADSCOPE_PROGRESS": "0"}


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "headscope.cli", *args], capture_output=True, text=True, env=ENV, timeout=600
    )


def test_patch_writes_heatmap_and_json(tmp_path):
    r = run("patch", "--model", "llama", "-n", "8", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "top 10 heads" in r.stdout and "L" in r.stdout
    js = next(tmp_path.glob("*.json"))
    assert js.name == "llama_arithmetic-v3_heads_denoise_tl_seed0.json"  # `llama` is organism v3: its own arithmetic
    data = json.loads(js.read_text())
    assert data["axes"] == ["layer", "head"] and len(data["scores"]) == 6 and len(data["scores"][0]) == 8
    assert next(tmp_path.glob("*.html")).stat().st_size > 10_000


def test_models_lists_organisms(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "llama" in out and "induction" in out


def _pairs(tmp_path, rows):
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + ("\n" if rows else ""))
    return str(p)


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn(" not in ln]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_model(tmp_path):
    _one_line_error(run("patch", "--model", "no-such-model", "--out", str(tmp_path)), "unknown model", "llama")


@pytest.mark.parametrize("name,hint", [("llamaa", "did you mean 'llama'"), ("gpt2", "local folder")])
def test_unknown_name_fails_fast_without_offline_flag(tmp_path, name, hint):
    # Outside `make`, HF_HUB_OFFLINE is unset: the hub client would retry for about 60 s.
    # The name is resolved before torch loads, with a 1 s reachability probe. (The time is
    # measured as CPU time of the child, which a loaded machine does not inflate.)
    import resource

    env = {k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")  # nothing cached
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [sys.executable, "-m", "headscope.cli", "patch", "--model", name, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _one_line_error(r, "unknown model", hint)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 2.0, f"resolving a bad name took {cpu:.2f} s of CPU: something heavy was imported first"


def _words_outside_vocab_pairs(tmp_path):
    return _pairs(
        tmp_path,
        [{"clean": "3 + 5 = zebra", "corrupt": "3 @ 5 = zebra", "answer": "8", "wrong": "2"}],
    )


def test_unknown_words_are_an_error(tmp_path):
    f = _words_outside_vocab_pairs(tmp_path)
    _one_line_error(
        run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path)),
        "outside the model's vocabulary",
        "zebra",
    )


def test_allow_unk_overrides(tmp_path):
    from headscope.loading import load_model

    m = load_model("llama-v2", allow_unk=True)
    toks = m.to_tokens(["3 + 5 = zebra"])
    assert int(toks[0, -1]) == m.tokenizer.unk_token_id


def test_prompt_longer_than_context_is_an_error():
    from headscope.common.errors import HeadscopeError
    from headscope.loading import load_model

    m = load_model("llama-v2")
    long = " ".join(["the"] * (m.n_ctx + 1))
    with pytest.raises(HeadscopeError, match="positions"):
        m.to_tokens([long])
    import torch

    with pytest.raises(HeadscopeError, match="positions"):
        m.logits(torch.full((1, m.n_ctx + 1), 5))


def test_near_zero_gap_is_an_error(tmp_path):
    # clean and corrupt identical: the corruption changes nothing
    f = _pairs(tmp_path, [{"clean": "3 + 5 =", "corrupt": "3 + 5 =", "answer": "8", "wrong": "2"}])
    r = run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("headscope: error")]
    assert len(errors) == 1 and "corruption does not change the answer" in errors[0], r.stderr


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
def test_model_without_tokenizer(tmp_path, backend):
    import shutil

    import torch

    from headscope.common.errors import HeadscopeError
    from headscope.loading import load_model
    from headscope.paths import organism_dir

    d = tmp_path / "no-tokenizer"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        if (organism_dir("llama-v2") / f).exists():
            shutil.copy(organism_dir("llama-v2") / f, d / f)
    m = load_model(str(d), backend)
    assert m.tokenizer is None
    ref = load_model("llama-v2", backend)
    toks = torch.tensor([[2, 10, 11, 12]])
    assert torch.allclose(m.logits(toks), ref.logits(toks), atol=1e-6)
    with pytest.raises(HeadscopeError, match="no tokenizer"):
        m.to_tokens(["3 + 5 ="])


def test_length_mismatch(tmp_path):
    f = _pairs(tmp_path, [{"clean": "3 + 5 =", "corrupt": "Q : What is 3 plus 5 ? A :", "answer": "8", "wrong": "2"}])
    _one_line_error(run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path)), "same length")


def test_answer_not_single_token(tmp_path):
    f = _pairs(tmp_path, [{"clean": "3 + 5 =", "corrupt": "3 @ 5 =", "answer": "eight thousand", "wrong": "2"}])
    _one_line_error(run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path)), "single token")


def test_empty_prompt_set(tmp_path):
    f = _pairs(tmp_path, [])
    _one_line_error(run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path)), "empty")


@pytest.mark.parametrize(
    "args,needle", [(["patch", "--backend", "jax"], "invalid choice"), (["patch", "-n", "0"], "n-prompts")]
)
def test_usage_errors(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args) if args[1] != "-n" else sys.exit(main(args))
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_organism_eval_induction(tmp_path):
    r = run("organism", "eval", "induction", "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["best_previous_token_head"].startswith("L0") and table["best_previous_token_score"] > 0.7
    assert table["best_induction_head"].startswith("L1") and table["best_induction_score"] > 0.7
    assert "best_induction_head" in r.stdout


def _pair_rows():
    return [
        {"clean": "3 + 5 =", "corrupt": "3 @ 5 =", "answer": "8", "wrong": "2", "note": "a"},
        {"clean": "4 + 2 =", "corrupt": "4 @ 2 =", "answer": "6", "wrong": "2", "note": "b"},
    ]


def test_pairs_in_every_documented_format_give_the_same_task(tmp_path):
    import csv

    from datasets import Dataset

    from headscope.tasks.base import load_pairs

    rows = _pair_rows()
    jl = _pairs(tmp_path, rows)
    cs = tmp_path / "pairs.csv"
    with cs.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = tmp_path / "pairs_ds"
    Dataset.from_list(rows).save_to_disk(str(ds))
    tasks = [load_pairs(str(p)) for p in (jl, cs, ds)]
    for t in tasks:
        assert (t.clean, t.corrupt, t.answers, t.wrong) == (
            [r["clean"] for r in rows],
            [r["corrupt"] for r in rows],
            [r["answer"] for r in rows],
            [r["wrong"] for r in rows],
        )
        assert [m["note"] for m in t.meta] == ["a", "b"]
    bad = tmp_path / "bad.csv"
    bad.write_text("clean,corrupt,answer\n3 + 5 =,3 @ 5 =,8\n")
    _one_line_error(run("patch", "--model", "llama-v2", "--prompts", str(bad), "--out", str(tmp_path)), "lacks wrong")


def test_multi_token_answers_by_first_token(tmp_path):
    from headscope.common.errors import HeadscopeError
    from headscope.loading import load_model
    from headscope.tasks.base import Task

    m = load_model("llama-v2")
    # "8 ." is two tokens: refused as a single-token answer, scored by "8" with answer_tokens="first"
    t = Task("multi", ["3 + 5 ="], ["3 @ 5 ="], ["8 ."], ["2 ."])
    with pytest.raises(HeadscopeError, match="first token"):
        t.prepare(m)
    b = t.prepare(m, answer_tokens="first")
    assert int(b.answer[0]) == m.token_id("8") and int(b.wrong[0]) == m.token_id("2")
    same = Task("same", ["3 + 5 ="], ["3 @ 5 ="], ["8 ."], ["8 !"])
    with pytest.raises(HeadscopeError, match="same first token"):
        same.prepare(m, answer_tokens="first")


def test_cli_prompt_longer_than_context(tmp_path):
    import json as _json

    from headscope.paths import organism_dir

    n_ctx = _json.loads((organism_dir("llama-v2") / "config.json").read_text())["max_position_embeddings"]
    long = " ".join(["the"] * n_ctx)
    f = _pairs(tmp_path, [{"clean": long, "corrupt": long, "answer": "8", "wrong": "2"}])
    r = run("patch", "--model", "llama-v2", "--prompts", f, "--out", str(tmp_path))
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("headscope: error")]
    assert r.returncode == 2 and len(errors) == 1 and "positions" in errors[0], r.stderr


def test_cli_model_without_tokenizer_says_what_to_add(tmp_path):
    import shutil

    from headscope.paths import organism_dir

    d = tmp_path / "no-tokenizer"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(organism_dir("llama-v2") / f, d / f)
    r = run("patch", "--model", str(d), "--backend", "nnsight", "-n", "4", "--out", str(tmp_path))
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("headscope: error")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "no tokenizer" in errors[0] and "save_pretrained" in errors[0]
