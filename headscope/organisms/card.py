"""Behaviour tables of the organisms and their data cards (data/models/NAME/CARD.md)."""

from __future__ import annotations

import json
from pathlib import Path

from headscope.common.errors import HeadscopeError


def measure(name: str, backend: str = "tl", path: str | Path | None = None) -> dict:
    """The behaviour table of organism ``name`` (loaded from ``path`` or its bundled folder)."""
    from headscope.loading import load_model

    src = str(path) if path is not None else name
    model = load_model(src, backend=backend)
    kind = (
        name
        if name in ("llama-v2", "induction")
        else json.loads((Path(src) / "organism.json").read_text())["organism"]
    )
    if kind in ("llama", "llama-v2"):  # `llama` in organism.json files written before the v2 rename
        from headscope.organisms.evaluate import evaluate_llama

        return evaluate_llama(model)
    if kind == "induction":
        from headscope.organisms.evaluate import head_scores_induction

        s = head_scores_induction(model)
        out: dict = {}
        for key, t in s.items():
            L, H = divmod(int(t.argmax()), t.shape[1])
            out[f"best_{key}_head"] = f"L{L}H{H}"
            out[f"best_{key}_score"] = float(t.max())
            for layer in range(t.shape[0]):
                out[f"{key}_layer{layer}"] = ", ".join(f"{v:.2f}" for v in t[layer].tolist())
        return out
    raise HeadscopeError(f"unknown organism kind {kind!r}")


def write_card(name: str, folder: str | Path) -> Path:
    """Measure the organism in ``folder`` and write its CARD.md (corpus, sizes, rates)."""
    folder = Path(folder)
    meta = json.loads((folder / "organism.json").read_text())
    table = measure(name, path=folder)
    cfg = json.loads((folder / "config.json").read_text())
    n_params = None
    try:
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            n_params = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # noqa: BLE001 - the count is informative only
        n_params = None
    lines = [
        f"# Organism `{name}`",
        "",
        f"Trained by `headscope organism train {name}` (fixed seed; {meta.get('train_seconds', '?')} s on 1 CPU "
        f"thread, final loss {meta.get('final_loss', float('nan')):.4f}).",
        "",
        "## Architecture",
        "",
        f"HF `LlamaForCausalLM`: {cfg['num_hidden_layers']} layers × {cfg['num_attention_heads']} heads "
        f"({cfg['num_key_value_heads']} KV heads), d_model {cfg['hidden_size']}, d_mlp {cfg['intermediate_size']}, "
        f"vocab {cfg['vocab_size']}, {n_params if n_params is not None else '?'} parameters.",
        "",
        "## Training data",
        "",
        "```json",
        json.dumps({k: v for k, v in meta.items() if k in ("world", "data", "train")}, indent=1),
        "```",
        "",
        "## Measured behaviour (held-out items, exact match of greedy outputs)",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    for k, v in table.items():
        lines.append(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    lines.append("")
    p = folder / "CARD.md"
    p.write_text("\n".join(lines))
    return p


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
