import copy

import pytest
import torch

from headscope.loading import load_model, wrap


@pytest.fixture(scope="session")
def llama_tl():
    return load_model("llama-v2", "tl")


@pytest.fixture(scope="session")
def llama_nn():
    return load_model("llama-v2", "nnsight")


@pytest.fixture(scope="session")
def induction_tl():
    return load_model("induction", "tl")


def random_gqa_hf(seed: int = 0, n_heads: int = 8, n_kv_heads: int = 2):
    """A randomly initialised grouped-query Llama (8 query heads share 2 KV heads)."""
    from transformers import LlamaForCausalLM

    from headscope.organisms.train import llama_config

    torch.manual_seed(seed)
    cfg = llama_config(64, d_model=64, n_layers=3, n_heads=n_heads, n_kv_heads=n_kv_heads, d_mlp=96, max_pos=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def gqa_pair():
    from headscope.organisms.train import build_index_tokenizer

    hf = random_gqa_hf()
    tok = build_index_tokenizer(64)
    return wrap(copy.deepcopy(hf), tok, "tl", name="gqa"), wrap(copy.deepcopy(hf), tok, "nnsight", name="gqa"), hf
