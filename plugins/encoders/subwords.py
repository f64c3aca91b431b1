"""Subword alignment and pooling, shared by every encoder that runs a HuggingFace tokenizer.

Corpora come pre-split into words; transformers see subwords. :func:`align_words` encodes
the words with ``is_split_into_words=True`` and records, for every subword position, the
word it belongs to (``-1`` for ``[CLS]``/``[SEP]``/padding), using the fast tokenizer's
``word_ids()``. :func:`pool_words` turns subword states ``[B, S, H]`` back into word states
``[B, W, H]`` (``first``/``mean``/``max``) without a Python loop over tokens.

A word the tokenizer turns into nothing (a zero-width space, a stray control character) is
encoded as the unknown token instead, so every word owns at least one subword and word
indices never shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tagpipe.errors import ModelError, TagpipeError
from tagpipe.plugins.encoders.names import POOLINGS


class TokenizerError(ModelError):
    """The tokenizer cannot align subwords to words (it is not a fast tokenizer)."""


class SentenceTooLongError(TagpipeError):
    """A sentence needs more subwords than the model has positions."""


@dataclass
class Alignment:
    """A batch of sentences encoded as subwords, with each subword's word.

    ``input_ids``/``attention_mask``/``word_index`` are ``[B, S]``; ``word_index[b, s]`` is the
    0-based word of subword ``s`` or ``-1``; ``n_words[b]`` is the number of words of sentence b;
    ``offsets[b]`` is, per subword, its ``(start, end)`` character span inside its word.
    """

    input_ids: Tensor
    attention_mask: Tensor
    word_index: Tensor
    n_words: list[int]
    offsets: list[list[tuple[int, int]]]

    @property
    def lengths(self) -> list[int]:
        """Subwords per sentence, specials included."""
        return self.attention_mask.sum(1).tolist()

    def spans(self, b: int) -> list[tuple[int, int]]:
        """``(first, last + 1)`` subword positions of each word of sentence ``b``."""
        return word_spans(self.word_index[b].tolist(), self.n_words[b])


def check_fast(tokenizer: Any) -> None:
    """Refuse a slow (pure Python) tokenizer: only fast ones report ``word_ids()``."""
    if not getattr(tokenizer, "is_fast", False):
        name = type(tokenizer).__name__
        raise TokenizerError(
            f"{name} is not a fast tokenizer, so subwords cannot be mapped back to words; "
            "the model folder needs a tokenizer.json (save it with a *TokenizerFast class)"
        )


def align_words(
    tokenizer: Any, sentences: Sequence[Sequence[str]], *, max_length: int | None = None
) -> Alignment:
    """Encode pre-split ``sentences`` (padded to the longest) and map subwords to words."""
    check_fast(tokenizer)
    unk = tokenizer.unk_token or "[UNK]"
    limit = max_length or getattr(tokenizer, "model_max_length", None) or 512
    rows: list[list[int]] = []
    words_of: list[list[int]] = []
    offsets: list[list[tuple[int, int]]] = []
    for sentence in sentences:
        enc = encode_words(tokenizer, sentence, unk=unk)
        ids = enc.word_ids()
        if len(enc["input_ids"]) > limit:
            raise SentenceTooLongError(
                f"a sentence of {len(sentence)} words needs {len(enc['input_ids'])} subwords; "
                f"the model takes at most {limit}"
            )
        rows.append(list(enc["input_ids"]))
        words_of.append([-1 if i is None else i for i in ids])
        offsets.append([tuple(o) for o in enc["offset_mapping"]])
    input_ids, mask, word_index = pad_rows(rows, words_of, tokenizer.pad_token_id or 0)
    return Alignment(input_ids, mask, word_index, [len(s) for s in sentences], offsets)


def pad_rows(rows: Sequence[Sequence[int]], words: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Subword rows padded into ``input_ids`` and ``attention_mask`` ``[rows, width]``, with each subword's
    word (or slot) index beside them (-1 for specials and padding)."""
    width = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # shape: [rows, width]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # shape: [rows, width]
    word_index = torch.full((len(rows), width), -1, dtype=torch.long)  # shape: [rows, width]
    for b, (row, word) in enumerate(zip(rows, words, strict=True)):
        input_ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        word_index[b, : len(word)] = torch.tensor(word)
    return input_ids, mask, word_index


def encode_words(tokenizer: Any, sentence: Sequence[str], *, special_tokens: bool = True,
                 unk: str | None = None) -> Any:
    """One pre-split sentence as a ``BatchEncoding`` (ids, offsets, ``word_ids()``), every word
    owning at least one subword (words the tokenizer drops are encoded as the unknown token)."""
    unk = unk or tokenizer.unk_token or "[UNK]"
    words = [w if w.strip() else unk for w in sentence]
    options = dict(is_split_into_words=True, add_special_tokens=special_tokens, return_offsets_mapping=True)
    enc = tokenizer(words, **options)
    produced = {i for i in enc.word_ids() if i is not None}
    if len(produced) < len(words):
        # some word produced no subword: give it the unknown token and encode again
        enc = tokenizer([w if k in produced else unk for k, w in enumerate(words)], **options)
    return enc


def word_spans(word_index: Sequence[int], n_words: int) -> list[tuple[int, int]]:
    """``(first, last + 1)`` positions of each word in one row of ``word_index``.

    Fast tokenizers keep a word's subwords contiguous, which the spans rely on.
    """
    first = [-1] * n_words
    last = [-1] * n_words
    for pos, w in enumerate(word_index):
        if w >= 0:
            if first[w] < 0:
                first[w] = pos
            last[w] = pos
    return [(f, e + 1) for f, e in zip(first, last, strict=True)]


def pool_words(states: Tensor, word_index: Tensor, n_words: int, mode: str = "first") -> Tensor:
    """Word states ``[B, W, H]`` from subword states ``[B, S, H]``.

    ``word_index`` ``[B, S]`` holds each subword's word in ``0..W-1`` or ``-1`` (ignored).
    A word with no subword gets zeros. ``first`` takes the word's first subword, ``mean``
    averages its subwords and ``max`` takes the element-wise maximum.
    """
    if mode not in POOLINGS:
        raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLINGS}")
    batch, seq, hidden = states.shape
    # ignored subwords go to an extra slot W that is dropped at the end
    slot = torch.where(word_index >= 0, word_index, torch.full_like(word_index, n_words))  # [B, S]
    if mode == "first":
        pos = torch.arange(seq, device=states.device).expand(batch, seq)  # [B, S]
        first = torch.full((batch, n_words + 1), seq, dtype=torch.long, device=states.device)
        first = first.scatter_reduce(1, slot, pos, reduce="amin")[:, :n_words]  # [B, W]
        present = first < seq
        picked = states.gather(1, first.clamp(max=seq - 1).unsqueeze(-1).expand(-1, -1, hidden))
        return picked * present.unsqueeze(-1)  # [B, W, H]
    index = slot.unsqueeze(-1).expand(-1, -1, hidden)  # [B, S, H]
    out = states.new_zeros((batch, n_words + 1, hidden))
    if mode == "mean":
        out = out.scatter_add(1, index, states)
        count = torch.zeros((batch, n_words + 1), dtype=states.dtype, device=states.device)
        count = count.scatter_add(1, slot, torch.ones_like(slot, dtype=states.dtype))
        return (out / count.clamp(min=1).unsqueeze(-1))[:, :n_words]
    out = out.scatter_reduce(1, index, states, reduce="amax", include_self=False)
    return out[:, :n_words]
