"""Training of the bundled model organisms (`headscope organism train NAME`).

Both organisms are HF ``LlamaForCausalLM`` models trained from a fixed seed on the CPU.
``llama-v2`` (until 2026-12-03 the alias ``llama``) learns the organism world
(:mod:`headscope.organisms.world`) with a word-level tokenizer; ``induction`` learns to
continue repeated random-token segments.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headscope.common import log, seed_everything
from headscope.common.threads import num_threads
from headscope.organisms.world import World, WorldConfig

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def build_word_tokenizer(texts: list[str], extra: Sequence[str] = ()):
    """A word-level HF fast tokenizer over every word of ``texts`` (+ ``extra``).

    Pre-tokenizer ``Whitespace`` (``\\w+|[^\\w\\s]+``); a post-processor prepends
    ``<bos>``; decoding joins words with spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for t in list(texts) + list(extra):
        for w, _ in pre.pre_tokenize_str(t):
            words.setdefault(w, None)
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.padding_side = "left"
    return fast


def build_index_tokenizer(vocab_size: int):
    """A tokenizer whose token ``i`` (for i >= 4) is the word ``t{i}``; ids 0–3 are the specials.

    Gives the token-level ``induction`` organism a tokenizer, so it loads like any HF
    model (nnsight's pipeline needs one) and prompts can be written as ``"t5 t9 t5"``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for i in range(len(SPECIALS), vocab_size):
        vocab[f"t{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


@dataclass
class TrainConfig:
    """Optimisation settings for an organism."""

    seed: int = 0
    steps: int = 1800
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    threads: int = 1
    log_every: int = 50


def llama_config(
    vocab_size: int,
    *,
    d_model: int = 128,
    n_layers: int = 6,
    n_heads: int = 8,
    n_kv_heads: int | None = None,
    d_mlp: int = 384,
    max_pos: int = 128,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
):
    from transformers import LlamaConfig

    # accepted through LlamaConfig's **kwargs (not in its typed signature)
    extra: dict[str, Any] = {"rope_theta": 10000.0, "attn_implementation": "eager"}
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=max_pos,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        **extra,
    )


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _train_loop(model, batches, cfg: TrainConfig, name: str) -> list[float]:
    """AdamW with warmup + cosine; ``batches(step)`` yields (input_ids, attention_mask, labels)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    losses = []
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        ids, mask, labels = batches(step)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.item())
        if (step + 1) % cfg.log_every == 0 or step == 0:
            avg = sum(losses[-cfg.log_every :]) / len(losses[-cfg.log_every :])
            log(f"[{name}] step {step + 1}/{cfg.steps} loss {avg:.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    return losses


def _save(model, tok, out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tok is not None:
        tok.save_pretrained(out_dir)
    (out_dir / "organism.json").write_text(json.dumps(meta, indent=2) + "\n")


def train_llama(out_dir: str | Path, world_cfg: WorldConfig | None = None, train_cfg: TrainConfig | None = None):
    """Train the ``llama-v2`` organism on the organism world and save it to ``out_dir``."""
    from transformers import LlamaForCausalLM

    world_cfg = world_cfg or WorldConfig()
    train_cfg = train_cfg or TrainConfig()
    with num_threads(train_cfg.threads):  # scoped: the caller's setting is restored
        seed_everything(train_cfg.seed)
        world = World(world_cfg)
        docs = world.documents()
        tok = build_word_tokenizer(docs, world.extra_vocab())
        enc = [tok(d)["input_ids"] + [tok.eos_token_id] for d in docs]
        cfg = llama_config(len(tok), pad_id=tok.pad_token_id, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id)
        model = LlamaForCausalLM(cfg)
        log(
            f"[llama-v2] {len(docs)} documents, vocab {len(tok)}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
        )
        rng = random.Random(train_cfg.seed)
        order: list[int] = []

        def batches(step: int):
            nonlocal order
            if len(order) < train_cfg.batch_size:
                fresh = list(range(len(enc)))
                rng.shuffle(fresh)
                order += fresh
            idx, order = order[: train_cfg.batch_size], order[train_cfg.batch_size :]
            seqs = [enc[i] for i in idx]
            L = max(map(len, seqs))
            ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), L), dtype=torch.long)
            for r, s in enumerate(seqs):  # right padding for training
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, 0] = -100
            return ids, mask, labels

        t0 = time.time()
        losses = _train_loop(model, batches, train_cfg, "llama-v2")
        meta = {
            "organism": "llama-v2",
            "world": world_cfg.to_dict(),
            "corpus_sha256": world.corpus_sha256(),
            "train": asdict(train_cfg),
            "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "train_seconds": round(time.time() - t0, 1),
        }
        _save(model, tok, Path(out_dir), meta)
        return model, tok

    # ---------------------------------------------------------------------------------------
    # induction


@dataclass
class InductionConfig:
    vocab: int = 64
    seq_len: int = 48
    min_seg: int = 6
    max_seg: int = 20


def induction_batch(gen: torch.Generator, batch: int, icfg: InductionConfig) -> torch.Tensor:
    """Random tokens with one randomly placed, random-length segment repeated later.

    Token 0 is BOS. The repeat's offset and length vary per row, so only an induction
    mechanism (not a positional shortcut) predicts the second copy.
    """
    V, T = icfg.vocab, icfg.seq_len
    x = torch.randint(4, V, (batch, T), generator=gen)
    x[:, 0] = 2  # <bos>
    for r in range(batch):
        L = int(torch.randint(icfg.min_seg, icfg.max_seg + 1, (1,), generator=gen))
        s1 = int(torch.randint(1, T - 2 * L + 1, (1,), generator=gen))
        s2 = int(torch.randint(s1 + L, T - L + 1, (1,), generator=gen))
        x[r, s2 : s2 + L] = x[r, s1 : s1 + L]
    return x


def train_induction(out_dir: str | Path, train_cfg: TrainConfig | None = None, icfg: InductionConfig | None = None):
    """Train the 2-layer ``induction`` organism and save it (no tokenizer: token ids only)."""
    from transformers import LlamaForCausalLM

    icfg = icfg or InductionConfig()
    train_cfg = train_cfg or TrainConfig(steps=2500, batch_size=64, lr=3e-3, warmup=100, threads=1)
    with num_threads(train_cfg.threads):  # scoped: the caller's setting is restored
        gen = seed_everything(train_cfg.seed)
        cfg = llama_config(icfg.vocab, d_model=64, n_layers=2, n_heads=4, d_mlp=128, max_pos=64)
        model = LlamaForCausalLM(cfg)

        def batches(step: int):
            x = induction_batch(gen, train_cfg.batch_size, icfg)
            labels = x.clone()
            labels[:, 0] = -100
            return x, torch.ones_like(x), labels

        t0 = time.time()
        losses = _train_loop(model, batches, train_cfg, "induction")
        meta = {
            "organism": "induction",
            "data": asdict(icfg),
            "train": asdict(train_cfg),
            "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "train_seconds": round(time.time() - t0, 1),
        }
        _save(model, build_index_tokenizer(icfg.vocab), Path(out_dir), meta)
        return model
