"""Head-selective fine-tuning, full SFT and peft LoRA behind one training loop.

The reusable piece behind SPT (``headscope/papers/spt/``, "From Yes-Men to Truth-Tellers",
ICML 2024, §4 "Supervised Pinpoint Tuning") and precise SFT (``headscope/papers/arithmetic/tune.py``,
"Interpreting and Improving LLMs in Arithmetic Calculation", ICML 2024, §5): train only
the query/key/value/output weights that belong to a few attention heads and freeze
everything else.

Which entries belong to head ``h`` of layer ``L`` (HF Llama layout, ``d = head_dim``):

- ``q_proj.weight`` ``[n_heads·d, d_model]``: rows ``h·d : (h+1)·d`` (and the bias rows);
- ``k_proj.weight`` / ``v_proj.weight`` ``[n_kv_heads·d, d_model]``: rows of the head's
  key/value group ``g = h // (n_heads / n_kv_heads)``, i.e. ``g·d : (g+1)·d``;
- ``o_proj.weight`` ``[d_model, n_heads·d]``: columns ``h·d : (h+1)·d``.

Grouped-query models (``n_kv_heads < n_heads``) share k/v between heads, so the paper's
rule trains Q and O only (``projections="auto"``); pass ``projections`` explicitly to
override (a k/v group slice then moves every head of that group).

Frozen entries cannot move: parameters without a selected slice get
``requires_grad=False`` and never reach the optimiser; in parameters that hold a slice,
:class:`MaskedOptimizer` (1) zeroes the gradient outside the mask through a gradient
hook (so gradient clipping sees only trainable entries), (2) zeroes the Adam moments
outside the mask, and (3) after every step writes the frozen entries back from a copy
taken at setup, so decoupled weight decay (AdamW: ``w ← w − lr·λ·w`` even where the
gradient is zero) cannot shift them either. The tests check bit-identity with
``torch.equal`` against a saved copy.

Only the changed slices need saving: :func:`save_slices` writes them (and what they
are) to one safetensors file; :func:`load_slices` writes them into a base model.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from headscope.common.errors import HeadscopeError
from headscope.common.progress import log, progress

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
METHODS = ("heads", "full", "lora")
Head = tuple[int, int]
Example = tuple[str, str] | str


# ---------------------------------------------------------------------------------------
# Which entries belong to which head


def _hf(model) -> nn.Module:
    """The underlying HF module of a HeadModel, or the module itself."""
    return getattr(model, "hf_model", model)


def _dims(model: nn.Module) -> tuple[int, int, int, int]:
    """(n_layers, n_heads, n_kv_heads, head_dim) from the model's config."""
    from headscope.backends._hf import dims_of

    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "model_type"):
        raise HeadscopeError(
            "head-selective tuning needs a Hugging Face causal LM with a config; got " + type(model).__name__
        )
    d = dims_of(cfg)
    return d.n_layers, d.n_heads, d.n_kv_heads, d.d_head


def _paths(model: nn.Module):
    """The architecture's module paths (:data:`headscope.backends._hf.ARCHS`)."""
    from headscope.backends._hf import arch_paths

    return arch_paths(model.config)


def resolve_projections(model, projections: str | Sequence[str] = "auto") -> tuple[str, ...]:
    """``"auto"``: q, k, v, o for multi-head attention; q and o for grouped-query models (paper §4.2)."""
    _, H, kv, _ = _dims(_hf(model))
    if isinstance(projections, str):
        if projections != "auto":
            projections = [p.strip() for p in projections.split(",") if p.strip()]
        else:
            return PROJECTIONS if kv == H else ("q_proj", "o_proj")
    out = []
    for p in projections:
        name = p if p.endswith("_proj") else f"{p}_proj"
        if name not in PROJECTIONS:
            raise HeadscopeError(f"unknown projection {p!r}; use q, k, v, o (or 'auto')")
        out.append(name)
    if not out:
        raise HeadscopeError("no projections selected; use 'auto' or a subset of q, k, v, o")
    return tuple(dict.fromkeys(out))


def _module_name(model: nn.Module, proj: str) -> str:
    """The attention submodule (relative to the attention module) holding logical ``proj``
    (q_proj, k_proj, v_proj, o_proj) in this architecture: its own projection or the fused one."""
    paths = _paths(model)
    if proj == "o_proj":
        return paths.o_proj
    if paths.qkv_fused is not None:
        return paths.qkv_fused
    assert paths.qkv is not None
    return paths.qkv[("q_proj", "k_proj", "v_proj").index(proj)]


def _proj_module(model: nn.Module, layer: int, proj: str) -> tuple[str, nn.Module]:
    """(qualified name, module) of layer ``layer``'s module holding ``proj``, also inside peft wrappers."""
    paths = _paths(model)
    rel = f"{paths.layers}.{layer}.{paths.attn}.{_module_name(model, proj)}"
    pat = re.compile(rf"(^|\.){re.escape(rel)}$")
    hits = [(n, m) for n, m in model.named_modules() if pat.search(n)]
    if not hits:
        raise HeadscopeError(
            f"no module {rel} in this model; is it a Hugging Face causal LM of a supported architecture "
            "(docs/models.md)?"
        )
    return hits[0]


@dataclass(frozen=True)
class ParamSlice:
    """A contiguous block ``[start, stop)`` along ``dim`` of parameter ``name`` owned by ``head``."""

    name: str
    dim: int
    start: int
    stop: int
    head: Head

    def index(self) -> tuple[slice, ...]:
        return (slice(None),) * self.dim + (slice(self.start, self.stop),)

    def key(self) -> str:
        return f"{self.name}[{self.dim}:{self.start}:{self.stop}]"


def _check_heads(model: nn.Module, heads: Sequence[Head]) -> list[Head]:
    n_layers, H, _, _ = _dims(model)
    out = []
    for hd in heads:
        try:
            L, h = int(hd[0]), int(hd[1])
        except (TypeError, ValueError, IndexError) as e:
            raise HeadscopeError(f"a head is a (layer, head) pair, got {hd!r}") from e
        if not (0 <= L < n_layers and 0 <= h < H):
            raise HeadscopeError(f"head L{L}H{h} is not in this model (layers 0..{n_layers - 1}, heads 0..{H - 1})")
        out.append((L, h))
    if not out:
        raise HeadscopeError("no heads selected; pass at least one (layer, head) pair")
    return list(dict.fromkeys(out))


def head_slices(model, heads: Sequence[Head], projections: str | Sequence[str] = "auto") -> list[ParamSlice]:
    """The parameter slices that belong to ``heads`` (see the module docstring for the layout).

    Biases of q/k/v (when the model has them) are sliced like the weight rows; the
    output projection's bias is shared by all heads and is not included. Fused q/k/v
    projections are sliced where the model reads each head: GPT-2's ``c_attn`` and
    Phi-3's ``qkv_proj`` hold ``[q | k | v]`` blocks, GPT-NeoX's ``query_key_value``
    holds ``[q_h | k_h | v_h]`` per head; GPT-2's Conv1D stores weights ``[in, out]``, so
    its slices run along the other dimension.
    """
    hf = _hf(model)
    _, H, kv, d = _dims(hf)
    paths = _paths(hf)
    projs = resolve_projections(hf, projections)
    group = H // kv
    w_out = 1 if paths.conv1d else 0  # the weight dimension indexed by output features
    out: list[ParamSlice] = []
    for L, h in _check_heads(hf, heads):
        for proj in projs:
            mname, mod = _proj_module(hf, L, proj)
            base = getattr(mod, "base_layer", mod)  # peft LoRA wrapper
            prefix = mname + (".base_layer" if base is not mod else "")
            if proj == "o_proj":
                out.append(ParamSlice(f"{prefix}.weight", 1 - w_out, h * d, (h + 1) * d, (L, h)))
                continue
            i = ("q_proj", "k_proj", "v_proj").index(proj)
            blk = h if proj == "q_proj" else h // group
            if paths.qkv_fused is None:
                start = blk * d
            elif paths.qkv_layout == "heads":
                start = h * 3 * d + i * d
            else:
                start = (0, H * d, H * d + kv * d)[i] + blk * d
            out.append(ParamSlice(f"{prefix}.weight", w_out, start, start + d, (L, h)))
            if getattr(base, "bias", None) is not None:
                out.append(ParamSlice(f"{prefix}.bias", 0, start, start + d, (L, h)))
    return out


def head_masks(
    model, heads: Sequence[Head], projections: str | Sequence[str] = "auto"
) -> dict[str, Bool[Tensor, " ..."]]:
    """Parameter name → bool mask of that parameter's shape, True where a selected head's entries are."""
    hf = _hf(model)
    params = dict(hf.named_parameters())
    masks: dict[str, Tensor] = {}
    for s in head_slices(hf, heads, projections):
        p = params[s.name]
        m = masks.setdefault(s.name, torch.zeros(p.shape, dtype=torch.bool, device=p.device))
        m[s.index()] = True
    return masks


# ---------------------------------------------------------------------------------------
# An optimiser that cannot move masked entries


class MaskedOptimizer:
    """Wrap a torch optimiser so entries outside ``masks`` never change (module docstring).

    Args:
        optimizer: any torch optimiser over the trainable parameters.
        masks: parameter → bool mask (True = may train). Parameters absent here train fully.
        grad_scale: multiply the trainable gradient by this (precise SFT rescales by
            ``H / h``, arithmetic paper §5).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, masks: dict[nn.Parameter, Tensor], grad_scale: float = 1.0
    ) -> None:
        self.optimizer = optimizer
        self.masks = masks
        self.grad_scale = float(grad_scale)
        self._frozen = {p: p.detach().clone() for p in masks}
        self._hooks = []
        for p, m in masks.items():
            self._hooks.append(p.register_hook(lambda g, m=m: g * m.to(g.dtype) * self.grad_scale))
        if self.grad_scale != 1.0:
            trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
            for p in (q for g in optimizer.param_groups for q in g["params"]):
                if p not in masks and id(p) in trainable:
                    self._hooks.append(p.register_hook(lambda g: g * self.grad_scale))

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for p, m in self.masks.items():  # also covers gradients written without the hook
            if p.grad is not None:
                p.grad.mul_(m)
        self.optimizer.step()
        for p, m in self.masks.items():
            p.copy_(torch.where(m, p, self._frozen[p]))
            for v in self.optimizer.state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    v.mul_(m)

    def close(self) -> None:
        """Remove the gradient hooks (the model is then an ordinary module again)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._frozen.clear()


# ---------------------------------------------------------------------------------------
# Setups: heads / full / lora


@dataclass
class TuneConfig:
    """Optimisation settings shared by every method (same budget for a fair comparison)."""

    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 10
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    grad_scale: float = 1.0
    add_eos: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise HeadscopeError(f"steps and batch size must be >= 1 (got {self.steps}, {self.batch_size})")
        if not self.lr > 0:
            raise HeadscopeError(f"learning rate must be > 0, got {self.lr}")


@dataclass
class Setup:
    """A model prepared for one fine-tuning method.

    ``model`` is what the loop runs (a peft wrapper for LoRA); ``optimizer`` is a
    :class:`MaskedOptimizer` for ``heads``; ``n_trainable`` counts entries that can
    change (for ``heads``: the mask's True entries, not whole q/k/v/o matrices).
    """

    method: str
    model: Any  # a plain HF model, or a peft wrapper for LoRA
    optimizer: torch.optim.Optimizer | MaskedOptimizer
    n_trainable: int
    n_total: int
    slices: list[ParamSlice] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def trainable_share(self) -> float:
        return self.n_trainable / self.n_total

    def finish(self) -> nn.Module:
        """The plain HF model with the training applied (LoRA merged; hooks removed)."""
        if isinstance(self.optimizer, MaskedOptimizer):
            self.optimizer.close()
        m = self.model
        if self.method == "lora":
            m = m.merge_and_unload()
        for p in m.parameters():
            p.requires_grad_(True)
        return m.eval()


def _adamw(params_decay: list, params_no_decay: list, cfg: TuneConfig) -> torch.optim.AdamW:
    groups = [{"params": params_decay, "weight_decay": cfg.weight_decay}]
    if params_no_decay:
        groups.append({"params": params_no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def setup_heads(
    model: nn.Module, heads: Sequence[Head], cfg: TuneConfig | None = None, projections: str | Sequence[str] = "auto"
) -> Setup:
    """Freeze everything except the q/k/v/o slices of ``heads`` (SPT §4; precise SFT §5)."""
    cfg = cfg or TuneConfig()
    model = _hf(model)
    heads = _check_heads(model, heads)
    masks_by_name = head_masks(model, heads, projections)
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    masks = {}
    for n, m in masks_by_name.items():
        params[n].requires_grad_(True)
        masks[params[n]] = m
    decay = [p for p in masks if p.ndim >= 2]
    no_decay = [p for p in masks if p.ndim < 2]
    opt = MaskedOptimizer(_adamw(decay, no_decay, cfg), masks, cfg.grad_scale)
    n_tr = int(sum(int(m.sum()) for m in masks_by_name.values()))
    return Setup(
        "heads",
        model,
        opt,
        n_tr,
        sum(p.numel() for p in model.parameters()),
        head_slices(model, heads, projections),
        heads,
        {"projections": list(resolve_projections(model, projections))},
    )


def setup_full(model: nn.Module, cfg: TuneConfig | None = None) -> Setup:
    """Every parameter trains (full SFT baseline)."""
    cfg = cfg or TuneConfig()
    model = _hf(model)
    for p in model.parameters():
        p.requires_grad_(True)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    n = sum(p.numel() for p in model.parameters())
    return Setup("full", model, _adamw(decay, no_decay, cfg), n, n)


def setup_lora(
    model: nn.Module,
    cfg: TuneConfig | None = None,
    r: int = 16,
    alpha: int | None = None,
    layers: Sequence[int] | None = None,
    targets: Sequence[str] = PROJECTIONS,
) -> Setup:
    """peft LoRA (rank ``r``) on the attention projections, optionally only in ``layers``.

    ``targets``: logical projections (q_proj, k_proj, v_proj, o_proj, mapped to this
    architecture's module names; a fused q/k/v module is one target) or module names."""
    from peft import LoraConfig, get_peft_model

    cfg = cfg or TuneConfig()
    model = _hf(model)
    n_layers = _dims(model)[0]
    if r < 1:
        raise HeadscopeError(f"LoRA rank must be >= 1, got {r}")
    if layers is not None:
        layers = sorted({int(L) for L in layers})
        if not layers or layers[0] < 0 or layers[-1] >= n_layers:
            raise HeadscopeError(f"LoRA layers {layers} are not layers of this model (0..{n_layers - 1})")
    n_total = sum(p.numel() for p in model.parameters())
    modules = list(dict.fromkeys(_module_name(model, t) if t in PROJECTIONS else t for t in targets))
    lcfg = LoraConfig(
        r=r,
        lora_alpha=alpha or 2 * r,
        lora_dropout=0.0,
        target_modules=modules,
        layers_to_transform=layers,
        bias="none",
    )
    pm = get_peft_model(model, lcfg)
    train = [p for p in pm.parameters() if p.requires_grad]
    n_tr = sum(p.numel() for p in train)
    return Setup(
        "lora", pm, _adamw(train, [], cfg), n_tr, n_total, info={"r": r, "layers": layers, "targets": list(targets)}
    )


def setup(
    model: nn.Module,
    method: str,
    cfg: TuneConfig | None = None,
    *,
    heads: Sequence[Head] = (),
    projections: str | Sequence[str] = "auto",
    lora_r: int = 16,
    lora_layers: Sequence[int] | None = None,
) -> Setup:
    """Dispatch to :func:`setup_heads`, :func:`setup_full` or :func:`setup_lora`."""
    if method == "heads":
        return setup_heads(model, heads, cfg, projections)
    if method == "full":
        return setup_full(model, cfg)
    if method == "lora":
        return setup_lora(model, cfg, r=lora_r, layers=lora_layers)
    raise HeadscopeError(f"unknown tuning method {method!r}; use one of {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------
# Data and the training loop


def encode_examples(tokenizer, examples: Sequence[Example], add_eos: bool = True) -> list[tuple[list[int], int]]:
    """Token ids and the loss start of each example.

    A ``(prompt, completion)`` pair is trained on the completion only (loss from the
    first completion token on); a plain string is trained on every token after BOS.
    """
    if not examples:
        raise HeadscopeError("no training examples; pass (prompt, completion) pairs or strings")
    out = []
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    for ex in examples:
        if isinstance(ex, str):
            ids = tokenizer(ex)["input_ids"]
            out.append((ids + eos, 1))
        else:
            prompt, completion = ex
            p = tokenizer(prompt)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            if not c:
                raise HeadscopeError(f"empty completion for prompt {prompt[:60]!r}")
            out.append((p + c + eos, len(p)))
    return out


def collate(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (−100 outside the loss) ``[batch, pos]``."""
    T = max(len(ids) for ids, _ in encoded)
    B = len(encoded)
    ids_t = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for r, (ids, start) in enumerate(encoded):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
        labels[r, start : len(ids)] = torch.tensor(ids[start:])
    return ids_t, mask, labels


def _lr_at(step: int, cfg: TuneConfig) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


@dataclass
class TuneLog:
    """What one run did: per-step losses, wall time, trainable parameters."""

    method: str
    losses: list[float]
    seconds: float
    n_trainable: int
    n_total: int
    config: dict
    info: dict = field(default_factory=dict)

    @property
    def time_per_step(self) -> float:
        return self.seconds / max(1, len(self.losses))

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "losses": self.losses,
            "seconds": self.seconds,
            "time_per_step": self.time_per_step,
            "n_trainable": self.n_trainable,
            "n_total": self.n_total,
            "trainable_share": self.n_trainable / self.n_total,
            "config": self.config,
            "info": self.info,
        }


def train(
    st: Setup,
    tokenizer,
    examples: Sequence[Example],
    cfg: TuneConfig | None = None,
    name: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TuneLog:
    """Plain cross-entropy fine-tuning of ``st.model`` on ``examples`` (same loop for every method).

    AdamW with linear warmup and cosine decay, gradient-norm clipping; each step draws
    ``batch_size`` examples from a seeded shuffle. Logs a line every ``log_every``
    steps and shows a progress bar. The model is left in eval mode; call
    ``st.finish()`` for the plain HF model.
    """
    cfg = cfg or TuneConfig()
    name = name or st.method
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = encode_examples(tokenizer, examples, cfg.add_eos)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    model, opt = st.model, st.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    losses: list[float] = []
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    for step in progress(range(cfg.steps), desc=f"tuning ({name})"):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(enc)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        ids, mask, labels = collate([enc[i] for i in idx], pad)
        dev = next(model.parameters()).device
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev), use_cache=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        losses.append(float(out.loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
        if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
            recent = losses[-cfg.log_every :]
            log(
                f"[{name}] step {step + 1}/{cfg.steps} loss {sum(recent) / len(recent):.4f} lr "
                f"{_lr_at(step, cfg):.2e} ({time.time() - t0:.1f}s)"
            )
    model.eval()
    return TuneLog(
        st.method,
        losses,
        time.time() - t0,
        st.n_trainable,
        st.n_total,
        asdict(cfg),
        {**st.info, "heads": [list(h) for h in st.heads]},
    )


# ---------------------------------------------------------------------------------------
# Checks, save and load


def untouched_identical(model: nn.Module, reference: dict[str, Tensor], masks: dict[str, Tensor]) -> bool:
    """Whether every entry outside ``masks`` equals ``reference`` bit for bit (``torch.equal``).

    ``reference``: a ``state_dict``-like copy taken before training (name → tensor).
    """
    for n, p in _hf(model).named_parameters():
        ref = reference[n]
        m = masks.get(n)
        if m is None:
            if not torch.equal(p.detach(), ref):
                return False
        elif not torch.equal(p.detach()[~m], ref[~m]):
            return False
    return True


def save_slices(model, slices: Sequence[ParamSlice], path: str | Path, metadata: dict | None = None) -> Path:
    """Write only ``slices`` of ``model``'s parameters to a safetensors file.

    Tensor keys are ``name[dim:start:stop]``; the file's metadata ``headscope`` entry
    holds the slices (with their heads) and ``metadata`` as JSON.
    """
    from safetensors.torch import save_file

    params = dict(_hf(model).named_parameters())
    tensors = {}
    for s in slices:
        if s.name not in params:
            raise HeadscopeError(f"parameter {s.name} is not in this model")
        tensors[s.key()] = params[s.name].detach()[s.index()].contiguous().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"slices": [asdict(s) for s in slices], "meta": metadata or {}}
    save_file(tensors, str(path), metadata={"headscope": json.dumps(meta)})
    return path


@torch.no_grad()
def load_slices(model, path: str | Path) -> dict:
    """Write the slices saved by :func:`save_slices` into ``model`` in place; returns the metadata."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise HeadscopeError(f"slice file {path} does not exist; write one with save_slices (or `headscope spt tune`)")
    params = dict(_hf(model).named_parameters())
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("headscope")
        if raw is None:
            raise HeadscopeError(f"{path} is not a headscope slice file (no 'headscope' metadata)")
        meta = json.loads(raw)
        for d in meta["slices"]:
            s = ParamSlice(d["name"], d["dim"], d["start"], d["stop"], tuple(d["head"]))
            if s.name not in params:
                raise HeadscopeError(
                    f"{path} holds a slice of {s.name}, which this model lacks; load it into the model it was "
                    "trained from"
                )
            t = f.get_tensor(s.key())
            target = params[s.name][s.index()]
            if target.shape != t.shape:
                raise HeadscopeError(
                    f"{path}: slice {s.key()} has shape {tuple(t.shape)} but the model's is {tuple(target.shape)}; "
                    "wrong base model"
                )
            target.copy_(t.to(target.dtype))
    return meta.get("meta", {})


__all__ = [
    "METHODS",
    "PROJECTIONS",
    "MaskedOptimizer",
    "ParamSlice",
    "Setup",
    "TuneConfig",
    "TuneLog",
    "collate",
    "encode_examples",
    "head_masks",
    "head_slices",
    "load_slices",
    "resolve_projections",
    "save_slices",
    "setup",
    "setup_full",
    "setup_heads",
    "setup_lora",
    "train",
    "untouched_identical",
]
