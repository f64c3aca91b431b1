"""What the BiLSTM encoder reads off a token string: ids, casing class, characters, bigrams; and the saved
vocabularies that give the ids (``vocab.json``).

Shared by :mod:`~tagpipe.plugins.encoders.bilstm` (vocabularies, featurizing, the network) and
anything else that embeds tokens the same way; it imports no other encoder module, so those
can all import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from tagpipe.errors import ModelError

PAD, UNK, BOW, EOW = 0, 1, 2, 3  # BOW/EOW: char-only markers, so the CNN sees word edges
CASINGS = ("<pad>", "lower", "upper", "title", "numeric", "has_digit", "mixed", "no_letters")
_DIGITS = str.maketrans("123456789", "000000000")


def casing(token: str) -> int:
    """Index into :data:`CASINGS` describing how ``token`` is written."""
    if token.isdigit():
        return 4
    has_digit = any(c.isdigit() for c in token)
    if token.islower():
        return 5 if has_digit else 1
    if token.isupper():
        return 5 if has_digit else 2
    if token.istitle() and not has_digit:
        return 3
    if has_digit:
        return 5
    return 6 if any(c.isalpha() for c in token) else 7


def normalizer(lowercase: bool, normalize_digits: bool) -> Callable[[str], str]:
    """The word-lookup key of a token: lowercased and digits zeroed, as configured."""

    def norm(token: str) -> str:
        token = token.lower() if lowercase else token
        return token.translate(_DIGITS) if normalize_digits else token

    return norm


def char_form(token: str, normalize_digits: bool) -> str:
    """The characters the char encoder sees: original case, digits zeroed when configured."""
    return token.translate(_DIGITS) if normalize_digits else token


def token_bigrams(keys: Sequence[str]) -> list[str]:
    """Each token's lookup key joined to its right neighbour's (``</s>`` after the last)."""
    return [f"{a}\t{b}" for a, b in zip(keys, [*keys[1:], "</s>"], strict=True)]


def unk_probabilities(counts: Sequence[int], alpha: float) -> Tensor | None:
    """P(replace an id by UNK) in training, ``alpha / (alpha + count)``; None when ``alpha`` is 0."""
    if not alpha:
        return None
    prob = torch.tensor([alpha / (alpha + c) if c > 0 else 0.0 for c in counts])
    prob[:2] = 0.0  # PAD and UNK themselves
    return prob


def embedding(rows: int, dim: int) -> nn.Embedding:
    """Rows uniform in +-sqrt(3 / dim) (Ma & Hovy 2016): small, same scale whatever ``dim``."""
    embed = nn.Embedding(rows, dim, padding_idx=PAD)
    bound = (3.0 / dim) ** 0.5
    with torch.no_grad():
        embed.weight.uniform_(-bound, bound)
        embed.weight[PAD].zero_()
    return embed


class CharCNN(nn.Module):
    """Max-pooled width-3 convolution over characters: ``[N, L]`` ids -> ``[N, filters]``."""

    def __init__(self, num_chars: int, char_dim: int, filters: int, dropout: float) -> None:
        super().__init__()
        self.embed = embedding(num_chars, char_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size=3, padding=1)
        self.output_dim = filters

    def forward(self, chars: Tensor) -> Tensor:
        """The words' characters laid end to end, one PAD between words, and one convolution over
        them all: no position is computed for padding (a batch's longest word sets ``L``, and most
        words are a third of it). The PAD gap gives each word's edge windows the zero input that
        per-word padding would, so the result equals convolving each word on its own."""
        if len(chars) == 0:
            return self.conv.weight.new_zeros(0, self.output_dim)
        real = chars != PAD  # shape: [N, L]; left-aligned, >= 2 per word (BOW/EOW)
        count = real.sum(1)  # shape: [N]
        span = count + 1  # the word, then one PAD
        start = torch.cumsum(span, 0) - span  # shape: [N]
        where = (start[:, None] + torch.arange(chars.shape[1], device=chars.device))[real]  # shape: [C]
        flat = chars.new_zeros(int(span.sum()))  # shape: [C + N]
        flat[where] = chars[real]
        x = self.dropout(self.embed(flat)).t().unsqueeze(0)  # shape: [1, char_dim, C + N]
        h = self.conv(x)[0].t()[where]  # shape: [C, filters], the real characters' windows
        word = torch.repeat_interleave(torch.arange(len(chars), device=chars.device), count)  # shape: [C]
        # -inf, not new_empty: amax's backward counts ties with these values too (include_self=False or not),
        # and a recycled buffer holding the last batch's maxima would halve some gradients at random
        out = h.new_full((len(chars), h.shape[1]), float("-inf"))
        return out.scatter_reduce(0, word[:, None].expand_as(h), h, "amax", include_self=False)  # shape: [N, filters]


class CharLSTM(nn.Module):
    """Final states of a BiLSTM over characters: ``[N, L]`` ids -> ``[N, 2 * units]``."""

    def __init__(self, num_chars: int, char_dim: int, units: int, dropout: float) -> None:
        super().__init__()
        self.embed = embedding(num_chars, char_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(char_dim, units, batch_first=True, bidirectional=True)
        self.output_dim = 2 * units

    def forward(self, chars: Tensor) -> Tensor:
        lengths = (chars != PAD).sum(1).clamp(min=1).cpu()  # shape: [N]
        x = self.dropout(self.embed(chars))  # shape: [N, L, char_dim]
        _, (h, _) = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return torch.cat([h[0], h[1]], dim=1)  # shape: [N, 2 * units]


def read_vocab(path: Path) -> dict[str, list[Any]]:
    """A saved ``vocab.json``: words and chars (the specials first) with their counts, and optional bigrams;
    a missing, damaged or inconsistent file is one :class:`ModelError` naming it."""
    try:
        vocab = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing (the bilstm encoder's vocabularies)") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(vocab, dict):
        raise ModelError(f"{path}: expected a JSON object with words, counts and chars")
    kinds = {"words": str, "counts": int, "chars": str, "bigrams": str, "bigram_counts": int}
    for key, kind in kinds.items():
        value = vocab.get(key, [] if key.startswith("bigram") else None)
        if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise ModelError(f"{path}: {key!r} must be a list of {'strings' if kind is str else 'integers'}")
    if len(vocab["words"]) < 2 or len(vocab["chars"]) < 4:
        raise ModelError(f"{path}: the word and character lists lack their special entries (<pad>, <unk>, ...)")
    for items, counts in (("words", "counts"), ("bigrams", "bigram_counts")):
        if len(vocab.get(items, [])) != len(vocab.get(counts, [])):
            raise ModelError(f"{path}: {len(vocab.get(items, []))} {items} but {len(vocab.get(counts, []))} {counts}")
    return vocab
