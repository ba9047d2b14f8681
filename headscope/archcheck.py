"""Which architectures and analyses work on which backend — checked, not claimed.

``check_arch(arch)`` builds a tiny randomly initialised model of one architecture, saves
it in the Hugging Face format (weights, config and a tokenizer, as a user's folder
would be), loads it through :func:`headscope.loading.load_model` on both backends and
runs every analysis against a reference that does not go through either backend:

- ``logits``: the HF model's own forward;
- ``patching`` / ``patching_by_pos`` / ``ablation``: a hand-written torch
  ``forward_pre_hook`` on the raw HF model's attention output projection that replaces
  one head's slice of its input (clean value, or the mean over the corrupt prompts);
- ``dla``: the heads' and components' direct contributions sum to the logit difference;
- ``attribution``, ``path_logits``, ``path_qkv`` (sender → receiver via q, k and v):
  the two backends agree (each backend's own hooks, independent implementations);
- ``steering``: a head-level additive patch equals the hand-written hook;
- ``tuning``: head-selective training moves the selected heads' slices and leaves every
  other weight bit-identical.

``headscope models --check`` runs it for every architecture in :data:`ARCH_CONFIGS` and
writes ``docs/models.md``; ``tests/headscope/test_architectures.py`` runs the same checks
(plus TransformerLens's own ``patching.py`` as a peer) in the test suite.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from headscope.common.errors import HeadscopeError

#: Tolerance for "agrees" (fp32 on CPU; measured differences are ~1e-7).
TOL = 1e-4
VOCAB = 64
BACKENDS = ("tl", "nnsight")


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as T

    common: dict[str, Any] = dict(vocab_size=VOCAB, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    llama_like: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **common,
    )
    return {
        "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common),
        "gpt_neox": lambda: T.GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            **common,
        ),  # fmt: skip
        "opt": lambda: T.OPTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            **common,
        ),  # fmt: skip
        "gptj": lambda: T.GPTJConfig(n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, **common),
        "llama": lambda: T.LlamaConfig(**llama_like),
        "mistral": lambda: T.MistralConfig(**llama_like),
        "qwen2": lambda: T.Qwen2Config(**llama_like),
        "gemma": lambda: T.GemmaConfig(head_dim=8, **llama_like),
        "gemma2": lambda: T.Gemma2Config(head_dim=8, **llama_like),
        "phi3": lambda: T.Phi3Config(**{**llama_like, "num_key_value_heads": 4}),
    }


ARCH_NAMES: tuple[str, ...] = (
    "gpt2",
    "gpt_neox",
    "opt",
    "gptj",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "phi3",
)
FEATURES: tuple[str, ...] = (
    "logits",
    "patching",
    "patching_by_pos",
    "ablation",
    "attribution",
    "dla",
    "path_logits",
    "path_qkv",
    "steering",
    "tuning",
)


def tiny_model_dir(arch: str, root: str | Path, seed: int = 0) -> Path:
    """A random tiny ``arch`` model saved with ``save_pretrained`` (plus a word-level
    tokenizer: ids 4..63 are the words ``t4``..``t63``) in ``root/arch``; returns the folder."""
    from transformers import AutoModelForCausalLM

    from headscope.organisms.train import build_index_tokenizer

    cfgs = _configs()
    if arch not in cfgs:
        raise HeadscopeError(f"no tiny config for architecture {arch!r}; known: {', '.join(cfgs)}")
    out = Path(root) / arch
    if (out / "config.json").exists():
        return out
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfgs[arch](), attn_implementation="eager").eval()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    build_index_tokenizer(VOCAB).save_pretrained(out)
    # A word-level tokenizer of our own: name the generic class, or AutoTokenizer would pick
    # the architecture's own tokenizer class (e.g. Qwen2's byte-level BPE) and re-split words.
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    return out


def _inputs(seed: int = 0, batch: int = 3, pos: int = 6) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, VOCAB, (batch, pos), generator=g)
    clean[:, 0] = 2  # BOS
    corrupt = clean.clone()
    corrupt[:, 2:4] = torch.randint(4, VOCAB, (batch, 2), generator=g)
    ans = torch.randint(4, VOCAB, (batch,), generator=g)
    wrong = (ans + 7 - 4) % (VOCAB - 4) + 4
    return clean, corrupt, ans, wrong


def _hf(path: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # tiny models load instantly; restored below
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _o_proj(hf: nn.Module, L: int) -> nn.Module:
    from headscope.backends._hf import arch_paths, get_path

    p = arch_paths(hf.config)
    return get_path(get_path(hf, p.layers)[L], f"{p.attn}.{p.o_proj}")


@torch.no_grad()
def _hook_run(hf: nn.Module, tokens: Tensor, edits: dict[int, Callable[[Tensor], Tensor]]) -> tuple[Tensor, dict]:
    """Logits of the raw HF model with ``edits[L](z)`` applied to the input of layer L's
    output projection (``z`` viewed ``[batch, pos, heads, d_head]``); also returns every
    layer's unedited ``z``. Written by hand as the reference: a torch forward_pre_hook."""
    from headscope.backends._hf import dims_of

    d = dims_of(hf.config)
    seen: dict[int, Tensor] = {}
    handles = []
    for L in range(d.n_layers):

        def pre(mod, args, L=L):
            x = args[0]
            z = x.reshape(x.shape[0], x.shape[1], d.n_heads, d.d_head)
            seen[L] = z.clone()
            if L in edits:
                return (edits[L](z.clone()).reshape(x.shape),) + tuple(args[1:])
            return None

        handles.append(_o_proj(hf, L).register_forward_pre_hook(pre))
    try:
        logits = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    return logits, seen


def _ld(logits: Tensor, ans: Tensor, wrong: Tensor) -> Tensor:
    last = logits[:, -1]
    idx = torch.arange(last.shape[0])
    return (last[idx, ans] - last[idx, wrong]).mean()


def _reference_patching(hf, clean, corrupt, ans, wrong, per_pos: bool) -> Tensor:
    """Denoising patching of every head by hand: corrupt run, one head's z from the clean run."""
    from headscope.backends._hf import dims_of

    d = dims_of(hf.config)
    cl_logits, z_clean = _hook_run(hf, clean, {})
    co_logits, _ = _hook_run(hf, corrupt, {})
    m_cl, m_co = _ld(cl_logits, ans, wrong), _ld(co_logits, ans, wrong)
    T = clean.shape[1]
    positions: list[Any] = list(range(T)) if per_pos else [slice(None)]
    out = torch.zeros(d.n_layers, len(positions), d.n_heads)
    for L in range(d.n_layers):
        for pi, p in enumerate(positions):
            for h in range(d.n_heads):

                def edit(z, L=L, p=p, h=h):
                    z[:, p, h] = z_clean[L][:, p, h]
                    return z

                logits, _ = _hook_run(hf, corrupt, {L: edit})
                out[L, pi, h] = (_ld(logits, ans, wrong) - m_co) / (m_cl - m_co)
    return out if per_pos else out[:, 0]


def _fmt(err: float) -> str:
    return f"✓ {err:.0e}" if err <= TOL else f"✗ off by {err:.1e}"


def check_arch(arch: str, root: str | Path, features: tuple[str, ...] = FEATURES) -> dict[str, dict[str, str]]:
    """Run the checks of the module docstring named in ``features`` on a tiny ``arch`` model in ``root``.

    Returns ``{feature: {backend: "✓ <max error>" | "✗ <reason>"}}``.
    """
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise HeadscopeError(f"unknown check {sorted(unknown)[0]!r}; use some of {', '.join(FEATURES)}")
    from headscope.attribution import ablate, attribution_patching, direct_logit_attribution
    from headscope.loading import load_model
    from headscope.model import Patch
    from headscope.patching import patch_heads, path_patch_heads

    path = tiny_model_dir(arch, root)
    clean, corrupt, ans, wrong = _inputs()
    hf = _hf(path)

    def metric(logits: Tensor) -> Tensor:
        return _ld(logits, ans.to(logits.device), wrong.to(logits.device))

    none = torch.zeros(())
    ref_all = _reference_patching(hf, clean, corrupt, ans, wrong, per_pos=False) if "patching" in features else none
    ref_pos = (
        _reference_patching(hf, clean, corrupt, ans, wrong, per_pos=True) if "patching_by_pos" in features else none
    )
    _, z_cor = _hook_run(hf, corrupt, {})
    ref_logits = hf(clean).logits.detach()
    L_ab, h_ab = 1, 2

    def mean_edit(z):
        z[:, :, h_ab] = z_cor[L_ab][:, :, h_ab].mean(0)
        return z

    ref_ablate, _ = _hook_run(hf, clean, {L_ab: mean_edit})
    from headscope.backends._hf import dims_of

    vec = torch.linspace(-1, 1, dims_of(hf.config).d_head)

    def add_edit(z):
        z[:, :, 1] = z[:, :, 1] + vec
        return z

    ref_steer, _ = _hook_run(hf, clean, {0: add_edit})

    res: dict[str, dict[str, str]] = {f: {} for f in features}
    others: dict[str, dict[str, Tensor]] = {}
    for be in BACKENDS:
        try:
            model = load_model(str(path), be)
        except HeadscopeError as e:
            for f in features:
                res[f][be] = f"✗ {e}"
            continue
        outs: dict[str, Tensor] = {}
        steer = Patch(0, "z", head=1, mode="add", value=vec)
        checks: dict[str, Callable[[], str]] = {
            "logits": lambda: _fmt(float((model.logits(clean) - ref_logits).abs().max())),
            "patching": lambda: _fmt(
                float((patch_heads(model, clean, corrupt, metric, show_progress=False).scores - ref_all).abs().max())
            ),
            "patching_by_pos": lambda: _fmt(
                float(
                    (
                        patch_heads(model, clean, corrupt, metric, per_position=True, show_progress=False).scores
                        - ref_pos
                    )
                    .abs()
                    .max()
                )
            ),
            "ablation": lambda: _fmt(
                float((ablate(model, clean, [(L_ab, h_ab)], "mean", corrupt) - ref_ablate).abs().max())
            ),
            "steering": lambda: _fmt(float((model.run_patched(clean, [steer]) - ref_steer).abs().max())),
        }

        def dla() -> str:
            d = direct_logit_attribution(model, clean, ans, wrong)
            total = d.scores.sum().item() + sum(d.info["components"].values()) + d.info["bias_term"]
            raw = ref_logits
            cap = getattr(hf.config, "final_logit_softcapping", None)
            if cap:  # the reference's raw logits, recomputed without the cap
                raw = _uncapped_logits(hf, clean)
            return _fmt(abs(total - float(metric(raw))))

        checks["dla"] = dla

        def attribution() -> str:
            outs["attribution"] = attribution_patching(model, clean, corrupt, metric).scores
            return "ran"

        def path_logits() -> str:
            outs["path_logits"] = path_patch_heads(model, clean, corrupt, metric, show_progress=False).scores
            return "ran"

        def path_qkv() -> str:
            outs["path_qkv"] = torch.stack(
                [
                    path_patch_heads(model, clean, corrupt, metric, receiver=(1, 0), via=v, show_progress=False).scores
                    for v in ("q", "k", "v")
                ]
            )
            return "ran"

        checks.update(attribution=attribution, path_logits=path_logits, path_qkv=path_qkv)
        checks["tuning"] = lambda: _tuning_check(path)
        for f in features:
            t0 = time.perf_counter()
            try:
                res[f][be] = checks[f]()
            except HeadscopeError as e:
                res[f][be] = f"✗ {e}"
            except Exception as e:  # noqa: BLE001 - the table reports what broke
                res[f][be] = f"✗ {type(e).__name__}: {' '.join(str(e).split())[:120]}"
            res[f].setdefault("_seconds", "0")
            res[f]["_seconds"] = f"{float(res[f]['_seconds']) + time.perf_counter() - t0:.1f}"
        others[be] = outs
    # cross-backend agreement for the analyses without a hand-written reference
    for f in ("attribution", "path_logits", "path_qkv"):
        if f not in features:
            continue
        a, b = others.get("tl", {}).get(f), others.get("nnsight", {}).get(f)
        if a is None or b is None:
            continue
        err = float(torch.nan_to_num(a - b, nan=0.0).abs().max())
        same_nan = bool((a.isnan() == b.isnan()).all())
        txt = _fmt(err) + " (backends agree)" if same_nan else "✗ NaN pattern differs"
        res[f]["tl"] = res[f]["nnsight"] = txt
    return res


@torch.no_grad()
def _uncapped_logits(hf: nn.Module, tokens: Tensor) -> Tensor:
    """The model's logits with final logit soft-capping switched off (a config flag of the HF model)."""
    cfg: Any = hf.config
    cap = cfg.final_logit_softcapping
    try:
        cfg.final_logit_softcapping = None
        return hf(tokens).logits
    finally:
        cfg.final_logit_softcapping = cap


def _tuning_check(path: Path) -> str:
    """Two AdamW steps of head-selective tuning on L1H2: its slices move, nothing else does."""
    from headscope.tuning import TuneConfig, head_masks, setup_heads

    hf = _hf(path)
    before = copy.deepcopy(hf.state_dict())
    setup = setup_heads(hf, [(1, 2)], TuneConfig(lr=1e-2))
    masks = head_masks(hf, [(1, 2)])
    toks = _inputs()[0]
    for _ in range(2):
        loss = hf(toks, labels=toks).loss
        loss.backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    after = hf.state_dict()
    moved = 0
    for name, p in after.items():
        m = masks.get(name)
        if m is None:
            if not torch.equal(p, before[name]):
                return f"✗ {name} changed but holds no selected slice"
            continue
        if not torch.equal(p[~m], before[name][~m]):
            return f"✗ {name} changed outside the selected slices"
        moved += int((p[m] != before[name][m]).sum())
    if moved == 0:
        return "✗ the selected slices did not move"
    return f"✓ {moved} entries moved, rest bit-identical"


def models_table(results: dict[str, dict[str, dict[str, str]]]) -> str:
    """``docs/models.md``: architectures × features × backends."""
    lines = [
        "# Supported architectures (generated)",
        "",
        "Generated by `headscope models --check --write docs/models.md` (headscope/archcheck.py): each "
        "architecture is a tiny random model saved with `save_pretrained` (with a tokenizer) and loaded like a "
        "user's folder; every cell is a check that ran, with its largest difference from a reference that does "
        "not go through the backend (a hand-written torch hook on the HF model, or a closed form); attribution "
        "and path patching are compared between the two backends. ✗ cells say what failed. Tolerance "
        f"{TOL:g} (fp32, CPU).",
        "",
        "| architecture | backend | " + " | ".join(FEATURES) + " |",
        "|---|---|" + "---|" * len(FEATURES),
    ]
    for arch, res in results.items():
        for be in BACKENDS:
            cells = [res[f].get(be, "–").replace("|", "/") for f in FEATURES]
            lines.append(f"| {arch} | {be} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Feature meanings: `patching` per head over all positions and `patching_by_pos` per head and position "
        "(denoising, normalised logit difference); `ablation` mean ablation of one head; `attribution` attribution "
        "patching (gradients); `dla` direct logit attribution sums to the logit difference; `path_logits` path "
        "patching sender → logits; `path_qkv` sender → a layer-1 receiver through its q, k and v; `steering` an "
        "additive head-level patch; `tuning` head-selective fine-tuning (only the head's q/k/v/o slices move).",
    ]
    return "\n".join(lines) + "\n"
