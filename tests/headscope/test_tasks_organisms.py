"""Tasks and the organisms: datasets, answers by closed form, measured behaviour."""

import pytest
import torch

from headscope.common.errors import HeadscopeError
from headscope.organisms.evaluate import LLAMA_REQUIREMENTS, evaluate_llama
from headscope.organisms.world import OPERATORS, World, arith_operands
from headscope.tasks import get_task


@pytest.mark.parametrize("op", OPERATORS)
def test_arith_operands_closed_form(op):
    for a, b, c in arith_operands(op):
        assert {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op] == c
        assert c >= 0


def test_arithmetic_task_as_dataset():
    t = get_task("arithmetic", n=None)
    ds = t.to_dataset()
    assert len(ds) == 81 + 45 and set(ds.column_names) >= {"clean", "corrupt", "answer", "wrong", "op"}
    for row in ds:
        a, b = row["a"], row["b"]
        assert int(row["answer"]) == (a + b if row["op"] == "add" else a - b)
        assert row["answer"] != row["wrong"]
        assert row["corrupt"] == row["clean"].replace(" + ", " @ ").replace(" - ", " @ ")


def test_world_is_reproducible_and_splits_disjoint():
    a, b = World().documents()[:200], World().documents()[:200]
    assert a == b
    w = World()
    train = {it["prompt"] for it in w.arith_items("add", "train")}
    held = {it["prompt"] for it in w.arith_items("add", "heldout")}
    assert held and not (train & held)
    docs = set(w.documents())
    assert not any(f"{p} " in d for d in list(docs)[:5000] for p in list(held)[:20] if d.startswith(p + " "))


def test_bad_task_arguments():
    with pytest.raises(HeadscopeError, match="unknown task"):
        get_task("poetry")
    with pytest.raises(HeadscopeError, match="style"):
        get_task("arithmetic", style="haiku")
    with pytest.raises(HeadscopeError, match="empty"):
        get_task("arithmetic", n=0)


def test_llama_organism_meets_its_spec(llama_tl):
    table = evaluate_llama(llama_tl)
    print({k: round(v, 3) for k, v in table.items()})
    for key, floor in LLAMA_REQUIREMENTS.items():
        assert table[key] >= floor, (key, table[key])
    assert llama_tl.n_layers * llama_tl.n_heads >= 48


def test_training_is_reproducible(tmp_path):
    from headscope.organisms.train import TrainConfig, train_induction

    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, log_every=100)
    a = train_induction(tmp_path / "a", cfg)
    b = train_induction(tmp_path / "b", cfg)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert (tmp_path / "a" / "model.safetensors").exists() and (tmp_path / "a" / "tokenizer.json").exists()


def test_world_generator_still_reproduces_the_bundled_corpus():
    """The corpus fingerprint recorded when the organism was trained matches today's generator."""
    import json

    from headscope.organisms.world import WorldConfig
    from headscope.paths import organism_dir

    meta = json.loads((organism_dir("llama-v2") / "organism.json").read_text())
    assert World(WorldConfig(**meta["world"])).corpus_sha256() == meta["corpus_sha256"]
    changed = WorldConfig(**{**meta["world"], "caving": 0.5})
    assert World(changed).corpus_sha256() != meta["corpus_sha256"]
