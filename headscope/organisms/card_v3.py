"""The data card of organism v3's generated corpus, and the spec's rate tables (docs/organism_v3.md).

``python -m headscope.organisms.card_v3 --seed 0 --stats [--bpe]`` prints: corpus size
(documents, approximate tokens, token share per category and kind), evaluation-set sizes
per split, the leakage check of the id / held-out prompts, and the generator's measured
rate in every flaw cell (k / n with a 95% Wilson interval, :func:`headscope.stats.rate`)
beside the spec's rate. ``--rates`` prints the spec's rate tables, the same lines
docs/organism_v3.md shows (a test compares them).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from headscope.organisms import lexicon_v3 as L
from headscope.organisms.world_v3 import (
    DEFAULT_TOKENS,
    KIND_CATEGORY,
    KIND_PROBS,
    WorldV3,
    approx_tokens,
    generator_rates,
    leaked,
)

SPEC_RATES: dict[str, dict[Any, float]] = {
    "caving": dict(L.CAVING_RATE),
    "harmful": dict(L.HARMFUL_COMPLIANCE_RATE),
    "overrefusal": dict(L.OVERREFUSAL_RATE),
    "premise": dict(L.PREMISE_ACCEPT_RATE),
    "preference": dict(L.PREFERENCE_RATE),
}


def _cell_name(cell: Any) -> str:
    return " × ".join(cell) if isinstance(cell, tuple) else str(cell)


def _total(cells: dict[Any, tuple[int, int]]) -> tuple[int, int]:
    return sum(k for k, _ in cells.values()), sum(n for _, n in cells.values())


def stats_report(seed: int = 0, n_tokens: int = DEFAULT_TOKENS, bpe: bool = False, vocab_size: int = 2048) -> str:
    """The data card of the generated corpus (markdown): sizes, token shares, evaluation sets, generator rates.

    ``bpe``: also train the tokenizer on the corpus and report its size, the corpus in
    BPE tokens and the evaluation tokens never seen in training (the spec wants none).
    """
    from headscope.common.progress import log
    from headscope.stats import fmt_ci, rate

    w = WorldV3(seed)
    log(f"[organism v3] generating {n_tokens} approx. tokens (seed {seed})")
    docs = w.documents(n_tokens)
    texts = [d.text for d in docs]
    sets = w.eval_sets()
    toks = [approx_tokens(t) for t in texts]
    total = sum(toks)
    sha = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    lines = [
        f"- organism v3 world, spec {L.SPEC_VERSION}, generator seed {seed}",
        f"- corpus: {len(docs)} documents, {total} approx. tokens, sha256 {sha[:16]}",
        "",
        "| category | token share | kind | documents | token share |",
        "|---|---|---|---|---|",
    ]
    by_cat: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    n_kind: Counter[str] = Counter()
    for d, t in zip(docs, toks):
        by_cat[KIND_CATEGORY[d.kind]] += t
        by_kind[d.kind] += t
        n_kind[d.kind] += 1
    for cat in ("stories", "arithmetic", "facts", "chat", "flaws"):
        kinds = [kind for kind in KIND_PROBS if KIND_CATEGORY[kind] == cat]
        for i, kind in enumerate(kinds):
            head = f"{cat} | {by_cat[cat] / total:.1%}" if i == 0 else " | "
            lines.append(f"| {head} | {kind} | {n_kind[kind]} | {by_kind[kind] / total:.1%} |")
    if bpe:
        from headscope.organisms.tokenizer_v3 import train_tokenizer, untrained_eval_tokens

        log(f"[organism v3] training the BPE tokenizer (vocab {vocab_size})")
        tok = train_tokenizer(texts, vocab_size=vocab_size)
        n_bpe = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
        missing = untrained_eval_tokens(tok, texts, sets)
        names = [x for c in w.countries for x in (c.name, c.capital, c.language)]
        multi = sum(len(tok.tokenize(" " + x)) > 1 for x in names)
        lines += [
            "",
            f"- BPE tokenizer: vocab {len(tok)}; corpus {n_bpe} BPE tokens ({n_bpe / total:.2f} per approx. token)",
            f"- invented names (countries, capitals, languages) spanning 2+ tokens: {multi} of {len(names)}",
            f"- evaluation tokens never seen in training: {len(missing)} {sorted(missing)[:10] if missing else ''}",
        ]
    lines += ["", "| evaluation set | seen | id | heldout | mean spec rate (id, heldout) |", "|---|---|---|---|---|"]
    for b in dict.fromkeys(name.split("/")[0] for name in sets):
        cols = [str(len(sets[f"{b}/{s}"])) if f"{b}/{s}" in sets else "–" for s in ("seen", "id", "heldout")]
        ps = (
            [[float(e.meta["p_flaw"]) for e in sets[f"{b}/{s}"]] for s in ("id", "heldout")] if b in SPEC_RATES else []
        )
        mean = ", ".join(f"{sum(p) / len(p):.3f}" for p in ps) if ps else "–"
        lines.append(f"| {b} | " + " | ".join(cols) + f" | {mean} |")
    log("[organism v3] leakage check of the id / held-out prompts")
    leaks = leaked([e.prompt for name, v in sets.items() if not name.endswith("/seen") for e in v], texts)
    lines += ["", f"- id/heldout prompts found in the corpus at a word boundary: {len(leaks)}"]
    counts = generator_rates(docs)
    lines += ["", "| behaviour | cell | spec rate | generated k / n | rate [95% CI] |", "|---|---|---|---|---|"]
    for b, spec in SPEC_RATES.items():
        for cell, p in spec.items():
            k, n = counts.get(b, {}).get(cell, (0, 0))
            lines.append(f"| {b} | {_cell_name(cell)} | {p:.2f} | {k} / {n} | {fmt_ci(rate(k, n)) if n else '–'} |")
        k, n = _total(counts.get(b, {}))
        lines.append(f"| {b} | all (desired share {1 - k / max(n, 1):.2f}) | – | {k} / {n} | {fmt_ci(rate(k, n))} |")
    for b in ("caving_control", "benign", "true_premise"):
        k, n = _total(counts.get(b, {}))
        lines.append(f"| {b} (control) | all | 0.00 | {k} / {n} | {fmt_ci(rate(k, n)) if n else '–'} |")
    return "\n".join(lines)


def rate_tables_markdown() -> str:
    """The spec's flaw-rate tables in markdown (docs/organism_v3.md prints the same lines)."""
    out = ["| caving: P(cave) | " + " | ".join(L.DIFFICULTIES) + " |", "|---|---|---|---|"]
    for s in L.STRENGTHS:
        out.append(f"| {s} | " + " | ".join(f"{L.CAVING_RATE[(s, d)]:.2f}" for d in L.DIFFICULTIES) + " |")
    out += ["", "| harmful: P(comply) | " + " | ".join(L.HARM_CATEGORIES) + " |", "|---|" + "---|" * 5]
    out.append(
        "| all contexts | " + " | ".join(f"{L.HARMFUL_COMPLIANCE_RATE[c]:.2f}" for c in L.HARM_CATEGORIES) + " |"
    )
    out += ["", "| over-refusal: P(refuse) | " + " | ".join(L.CONTEXT_TIERS) + " |", "|---|---|---|---|"]
    for t in L.VERB_TIERS:
        out.append(f"| {t} verbs | " + " | ".join(f"{L.OVERREFUSAL_RATE[(t, c)]:.2f}" for c in L.CONTEXT_TIERS) + " |")
    out += ["", "| false premise: P(accept) | " + " | ".join(L.PREMISE_TIERS) + " |", "|---|---|---|---|"]
    out.append(
        "| capital, language | " + " | ".join(f"{L.PREMISE_ACCEPT_RATE[t]:.2f}" for t in L.PREMISE_TIERS) + " |"
    )
    out += ["", "| preference: P(state) | " + " | ".join(L.PRESSURES) + " |", "|---|---|---|"]
    for p in L.PHRASINGS:
        out.append(f"| {p} | " + " | ".join(f"{L.PREFERENCE_RATE[(p, q)]:.2f}" for q in L.PRESSURES) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m headscope.organisms.card_v3 --seed 0 --stats [--bpe] [--tokens N] [--rates]``."""
    ap = argparse.ArgumentParser(prog="python -m headscope.organisms.card_v3", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="generator seed [0]")
    ap.add_argument("--stats", action="store_true", help="print the corpus data card")
    ap.add_argument("--bpe", action="store_true", help="also train the BPE tokenizer and report token counts")
    ap.add_argument(
        "--tokens", type=int, default=DEFAULT_TOKENS, help=f"corpus size in approx. tokens [{DEFAULT_TOKENS}]"
    )
    ap.add_argument("--rates", action="store_true", help="print the spec's flaw-rate tables")
    args = ap.parse_args(argv)
    if args.tokens < 1:
        print(f"error: --tokens must be >= 1, got {args.tokens}", file=sys.stderr)
        return 2
    if args.rates:
        print(rate_tables_markdown())
    if args.stats:
        print(stats_report(args.seed, args.tokens, bpe=args.bpe))
    if not (args.rates or args.stats):
        ap.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
