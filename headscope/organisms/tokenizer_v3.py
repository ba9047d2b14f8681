"""Organism v3's tokenizer: a byte-level BPE trained on the corpus, digits always single tokens.

Method (docs/organism_v3.md, "Tokenizer"): ``tokenizers`` BPE with the pre-tokenizer
``Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False)])``. Digits
are split before the GPT-2 regex runs, so no merge can join two digits or a digit and a
letter: every number is one token per digit, the same ten tokens wherever the digit
stands, and the space before a number is a token of its own (``" 85"`` → ``Ġ``, ``8``,
``5``), as in Llama-2's tokenizer. Words, entity names and punctuation get BPE merges,
so words and names rarer than the vocabulary can hold span several tokens (at the spec's
vocab 2048, about 60% of the invented names: the frequent ones are single tokens, as
frequent names are in real models). Specials: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2,
``<eos>`` 3 (the ids of the other organisms); a post-processor prepends ``<bos>``.

Saved in the HF format (``PreTrainedTokenizerFast.save_pretrained``: tokenizer.json +
tokenizer_config.json with bos/eos/pad).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
DEFAULT_VOCAB = 2048


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB, out_dir: str | Path | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (vocab 2k–8k).

    ``min_frequency=2``; the initial alphabet is the 256 byte symbols, so any string
    encodes (unseen bytes are single, untrained tokens: :func:`untrained_eval_tokens`
    checks that evaluation text never needs one). Saved to ``out_dir`` if given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not 2048 <= vocab_size <= 8192:
        raise ValueError(f"vocab_size {vocab_size} is outside the spec's 2k–8k (docs/organism_v3.md)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    fast.padding_side = "left"
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def token_ids(tok: Any, texts: Sequence[str]) -> set[int]:
    """Every token id that encoding ``texts`` (without specials) produces."""
    out: set[int] = set()
    for ids in tok(list(texts), add_special_tokens=False)["input_ids"]:
        out.update(ids)
    return out


def untrained_eval_tokens(tok: Any, corpus: Sequence[str], sets: Mapping[str, Sequence[Any]]) -> dict[str, str]:
    """Tokens of evaluation text (prompt + each continuation) that never occur in the tokenized corpus.

    Returns token string → one evaluation text that needs it; empty when every evaluation
    token is a trained token (the spec's requirement, checked by the tests).
    """
    seen = token_ids(tok, corpus)
    missing: dict[str, str] = {}
    for exs in sets.values():
        texts = [t for e in exs for t in (e.prompt, e.prompt + e.desired, e.prompt + e.flawed)]
        for text, ids in zip(texts, tok(texts, add_special_tokens=False)["input_ids"]):
            for i in ids:
                if i not in seen:
                    missing.setdefault(tok.convert_ids_to_tokens(i), text)
    return missing
