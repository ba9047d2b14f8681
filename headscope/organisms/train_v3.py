"""Training of organism v3 (`headscope organism train llama-v3 [--seed S]`), with checkpoint/resume.

Method (docs/organism_v3.md §1, §11): one corpus for every training seed (generator seed 0,
:func:`headscope.organisms.world_v3.build_corpus`), a byte-level BPE trained on it
(:func:`headscope.organisms.tokenizer_v3.train_tokenizer`, vocab 2048), every document
encoded as ``<bos> text <eos>``. Each epoch shuffles the documents with a generator seeded by
(training seed, epoch), concatenates them and cuts the stream into rows of ``seq_len``
tokens (documents may straddle rows, as in LM pre-training); the loss is next-token
cross-entropy on every position. HF ``LlamaForCausalLM`` (the candidate of §1: d 256,
6 layers × 8 heads, SwiGLU 704, untied embeddings, 5.87M parameters, 23.5 MB in fp32),
AdamW (β 0.9/0.95, weight decay 0.1 on matrices), linear warmup then cosine to 10% of the
peak, gradient clipping at 1, bf16 autocast on the CPU (master weights fp32; measured
4.4k tokens/s against 2.8k in fp32 on this 2-core machine, and 5.5k with ``torch.compile``).

The batch of step ``s`` is a pure function of (training seed, s), and a checkpoint holds
the model, the optimiser and the step, so a resumed run continues the same schedule on the
same data. Training seeds decide initialisation and batch order only.

Written by hand: the packing and the resumable loop (the HF ``Trainer`` would pull in
``accelerate`` and a dataset pipeline for a 60-line loop; nothing else here needs them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from headscope.common import log
from headscope.common.threads import num_threads
from headscope.organisms.lexicon_v3 import SPEC_VERSION

ORGANISM_V3 = "llama-v3"


@dataclass
class V3Config:
    """Model and optimisation settings of organism v3 (recorded in organism.json)."""

    seed: int = 0  # training seed: initialisation and batch order
    corpus_seed: int = 0  # generator seed (the same corpus for every training seed)
    n_tokens: int = 4_000_000
    vocab_size: int = 2048
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    d_mlp: int = 704
    seq_len: int = 256
    batch_size: int = 32  # rows of seq_len tokens: 8,192 tokens per step
    steps: int = 1800
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup: int = 150
    weight_decay: float = 0.1
    threads: int = 2
    bf16: bool = True
    compile: bool = True
    ckpt_every: int = 100
    log_every: int = 25
    extra: dict[str, Any] = field(default_factory=dict)


def v3_alias(seed: int) -> str:
    """``llama-v3`` for training seed 0, ``llama-v3-s{seed}`` otherwise (docs/organism_v3.md §1)."""
    return ORGANISM_V3 if seed == 0 else f"{ORGANISM_V3}-s{seed}"


def lr_at(step: int, cfg: V3Config) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``lr`` to ``min_lr_frac · lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def prepare_corpus(cfg: V3Config, work: Path):
    """Corpus, tokenizer and encoded documents, cached in ``work`` (keyed by the corpus hash).

    Returns ``(tokenizer, docs, sha)``: ``docs`` a list of int32 tensors ``<bos> text <eos>``.
    """
    from transformers import AutoTokenizer

    from headscope.organisms.tokenizer_v3 import train_tokenizer
    from headscope.organisms.world_v3 import build_corpus

    t0 = time.time()
    texts = build_corpus(cfg.corpus_seed, cfg.n_tokens)
    sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    cache = work / f"corpus-{sha[:16]}-v{cfg.vocab_size}"
    if (cache / "ids.pt").exists():
        tok = AutoTokenizer.from_pretrained(str(cache))
        blob = torch.load(cache / "ids.pt")
        flat, lens = blob["flat"], blob["lens"].tolist()
    else:
        cache.mkdir(parents=True, exist_ok=True)
        tok = train_tokenizer(texts, cfg.vocab_size, out_dir=cache)
        enc = tok(texts, add_special_tokens=True)["input_ids"]  # <bos> prepended
        seqs = [ids + [tok.eos_token_id] for ids in enc]
        lens = [len(s) for s in seqs]
        flat = torch.tensor([i for s in seqs for i in s], dtype=torch.int32)
        torch.save({"flat": flat, "lens": torch.tensor(lens)}, cache / "ids.pt")
    docs = list(torch.split(flat, lens))
    log(
        f"[{ORGANISM_V3}] corpus {len(texts)} documents, {len(flat)} BPE tokens, sha256 {sha[:16]} "
        f"({time.time() - t0:.0f}s)"
    )
    return tok, docs, sha


class Batches:
    """Row ``r`` of epoch ``e``: documents shuffled by (seed, e), concatenated, cut into windows of ``seq_len + 1``."""

    def __init__(self, docs: list[torch.Tensor], cfg: V3Config) -> None:
        self.docs, self.cfg = docs, cfg
        self._epoch: int | None = None
        self._rows: torch.Tensor | None = None
        n_tok = sum(len(d) for d in docs)
        self.rows_per_epoch = (n_tok - 1) // cfg.seq_len

    def _rows_of(self, epoch: int) -> torch.Tensor:
        if self._epoch != epoch:
            g = torch.Generator().manual_seed(1_000_003 * self.cfg.seed + epoch)
            perm = torch.randperm(len(self.docs), generator=g).tolist()
            stream = torch.cat([self.docs[i] for i in perm]).long()
            T = self.cfg.seq_len
            n = self.rows_per_epoch
            # row r: tokens [r*T, r*T + T] (T + 1 tokens: inputs and shifted labels)
            self._rows = stream[: n * T + 1].unfold(0, T + 1, T)
            self._epoch = epoch
        assert self._rows is not None
        return self._rows

    def __call__(self, step: int) -> torch.Tensor:
        """``[batch, seq_len + 1]`` token ids of step ``step``."""
        B = self.cfg.batch_size
        start = step * B
        out: list[torch.Tensor] = []
        while len(out) < B:
            e, r = divmod(start + len(out), self.rows_per_epoch)
            out.append(self._rows_of(e)[r])
        return torch.stack(out)

    def epochs(self, steps: int) -> float:
        return steps * self.cfg.batch_size / self.rows_per_epoch


def build_model(cfg: V3Config, vocab: int):
    from transformers import LlamaForCausalLM

    from headscope.organisms.train import llama_config

    torch.manual_seed(cfg.seed)
    mcfg = llama_config(
        vocab, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp, max_pos=cfg.seq_len
    )
    return LlamaForCausalLM(mcfg)


def _optimizer(model, cfg: V3Config):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def _save_ckpt(path: Path, key: str, model, opt, step: int, losses: list[float], elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    state = {"key": key, "model": model.state_dict(), "opt": opt.state_dict(), "step": step}
    torch.save({**state, "losses": losses, "elapsed": elapsed}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint


def train_v3(
    out_dir: str | Path,
    cfg: V3Config | None = None,
    work_dir: str | Path | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train organism v3 with training seed ``cfg.seed`` and save it to ``out_dir``.

    ``work_dir`` (default ``out/train-{alias}``) holds the cached corpus and ``ckpt.pt``; a
    run that finds a checkpoint of the same configuration resumes from it. ``stop_after``
    stops (after checkpointing) at that step without saving the organism: a test of resume.
    Returns the metadata written to ``organism.json``.
    """
    cfg = cfg or V3Config()
    alias = v3_alias(cfg.seed)
    out = Path(out_dir)
    work = Path(work_dir) if work_dir else Path("out") / f"train-{alias}"
    work.mkdir(parents=True, exist_ok=True)
    with num_threads(cfg.threads):
        tok, docs, sha = prepare_corpus(cfg, work)
        batches = Batches(docs, cfg)
        model = build_model(cfg, len(tok))
        opt = _optimizer(model, cfg)
        ckpt = work / "ckpt.pt"
        key = json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("threads", "compile", "log_every")})
        (work / "config.json").write_text(key)
        step, losses, elapsed = 0, [], 0.0
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            if state["key"] != key:
                raise RuntimeError(f"{ckpt} is from another configuration; delete it to start afresh")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step, losses, elapsed = state["step"], state["losses"], state["elapsed"]
            log(f"[{alias}] resumed at step {step} ({elapsed:.0f}s trained)")
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"[{alias}] {n_params / 1e6:.2f}M parameters, {cfg.steps} steps × {cfg.batch_size * cfg.seq_len} tokens "
            f"= {batches.epochs(cfg.steps):.2f} epochs of {batches.rows_per_epoch * cfg.seq_len} tokens"
        )
        fwd = torch.compile(model) if cfg.compile else model
        model.train()
        t_start = time.time() - elapsed
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            rows = batches(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = fwd(input_ids=rows[:, :-1], use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % cfg.log_every == 0 or step == 1:
                avg = sum(losses[-cfg.log_every :]) / len(losses[-cfg.log_every :])
                log(
                    f"[{alias}] step {step}/{cfg.steps} loss {avg:.4f} lr {lr_at(step - 1, cfg):.2e} "
                    f"({time.time() - t_start:.0f}s)"
                )
            if step % cfg.ckpt_every == 0 or step == cfg.steps or step == stop_after:
                _save_ckpt(ckpt, key, model, opt, step, losses, time.time() - t_start)
            if stop_after is not None and step >= stop_after:
                model.eval()
                return {"stopped_at": step}
        model.eval()
        elapsed = time.time() - t_start
    meta = {
        "organism": alias,
        "spec": "docs/organism_v3.md",
        "spec_version": SPEC_VERSION,
        "corpus_sha256": sha,
        "config": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": round(batches.epochs(cfg.steps), 3),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "train_seconds": round(elapsed, 1),
        "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
        "loss_every_100": [
            round(sum(losses[i : i + 100]) / len(losses[i : i + 100]), 4) for i in range(0, len(losses), 100)
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(str(out))
    (out / "organism.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"[{alias}] saved to {out} ({elapsed / 60:.1f} min)")
    return meta
