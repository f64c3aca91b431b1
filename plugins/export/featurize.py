"""The BiLSTM encoder's featurization in plain Python and numpy (torch-free), for the ONNX runtime.

It reads a token exactly as ``tagpipe.bilstm.v1`` does (``tagpipe.plugins.encoders.token_features`` and
``BiLSTMEncoder.featurize``): the word looked up lowercased with digits zeroed (as configured), a casing
class, the characters in their original case between begin/end markers (the middle of an overlong word
cut out), and optionally each token's bigram with its right neighbour. It makes the same arrays, which
the exported graph takes as inputs: ``word_ids``/``casing``/``char_index`` ``[B, T]``, ``char_ids``
``[U, L]`` (the batch's ``U`` distinct token strings), ``lengths`` ``[B]``, and ``bigram_ids`` ``[B, T]``.
This is a deliberate copy of the encoder's token reading (``token_features`` imports torch, this module
must not); tests/test_export_onnx.py checks its arrays against the encoder's own ``featurize``, so the two
cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CACHED_TOKENS = 500_000  # token strings whose ids are remembered


def casing(token: str) -> int:
    """The casing class id of ``token``, as the BiLSTM encoder numbers them (``<pad>`` is 0)."""
    if token.isdigit():
        return 4  # numeric
    has_digit = any(c.isdigit() for c in token)
    if token.islower():
        return 5 if has_digit else 1  # has_digit / lower
    if token.isupper():
        return 5 if has_digit else 2  # upper
    if token.istitle() and not has_digit:
        return 3  # title
    if has_digit:
        return 5
    return 6 if any(c.isalpha() for c in token) else 7  # mixed / no_letters


class Featurizer:
    """Token strings -> the id arrays of the exported graph, from the model's ``vocab.json``.

    ``settings``: ``lowercase``, ``normalize_digits``, ``max_word_len``, ``bigrams`` (bool) and the
    special ids ``pad``, ``unk``, ``bow``, ``eow`` (written by the export).
    """

    def __init__(self, vocab: dict[str, Any], settings: dict[str, Any]) -> None:
        self.lowercase = bool(settings["lowercase"])
        self.normalize_digits = bool(settings["normalize_digits"])
        self.max_word_len = int(settings["max_word_len"])
        self.bigrams = bool(settings.get("bigrams", False))
        self.unk, self.bow, self.eow = int(settings["unk"]), int(settings["bow"]), int(settings["eow"])
        # the specials (<pad>, <unk>) are ids only: a token spelt "<unk>" is an unknown word
        self.word_index = {w: i for i, w in enumerate(vocab["words"]) if i > self.unk}
        self.char_index = {c: i for i, c in enumerate(vocab["chars"])}
        self.bigram_index = {b: i for i, b in enumerate(vocab.get("bigrams", [])) if i > self.unk}
        self._cache: dict[str, tuple[int, int, list[int]]] = {}
        self._digits = str.maketrans("123456789", "000000000")  # digits read as 0, as the encoder reads them

    def key(self, token: str) -> str:
        """The word-lookup key: lowercased and digits zeroed, as configured."""
        token = token.lower() if self.lowercase else token
        return token.translate(self._digits) if self.normalize_digits else token

    def word_id(self, token: str) -> int:
        """The word row: the key, else (cased lookup) the lowercased then the capitalised key, else UNK."""
        key = self.key(token)
        word = self.word_index.get(key)
        if word is None and not self.lowercase:
            word = self.word_index.get(key.lower())
            if word is None:
                word = self.word_index.get(key.capitalize())
        return self.unk if word is None else word

    def token(self, token: str) -> tuple[int, int, list[int]]:
        """(word id, casing id, char ids with the begin/end markers) of one token string, cached."""
        hit = self._cache.get(token)
        if hit is None:
            form = token.translate(self._digits) if self.normalize_digits else token
            chars = [self.char_index.get(c, self.unk) for c in form]
            if len(chars) > self.max_word_len:  # keep both ends
                head = self.max_word_len // 2
                chars = chars[:head] + chars[len(chars) - (self.max_word_len - head) :]
            hit = (self.word_id(token), casing(token), [self.bow, *chars, self.eow])
            if len(self._cache) >= CACHED_TOKENS:
                self._cache.clear()
            self._cache[token] = hit
        return hit

    def __call__(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of non-empty sentences (int64 arrays, 0 at padding)."""
        batch, seq = len(sentences), max((len(s) for s in sentences), default=0)
        word_ids = np.zeros((batch, seq), dtype=np.int64)
        casings = np.zeros((batch, seq), dtype=np.int64)
        char_index = np.zeros((batch, seq), dtype=np.int64)
        distinct: dict[str, int] = {}
        rows: list[list[int]] = []
        for b, sentence in enumerate(sentences):
            for t, token in enumerate(sentence):
                word, case, chars = self.token(token)
                word_ids[b, t], casings[b, t] = word, case
                row = distinct.get(token)
                if row is None:
                    row = distinct[token] = len(rows)
                    rows.append(chars)
                char_index[b, t] = row
        char_ids = np.zeros((len(rows), max((len(r) for r in rows), default=1)), dtype=np.int64)
        for u, chars in enumerate(rows):
            char_ids[u, : len(chars)] = chars
        features = {"word_ids": word_ids, "casing": casings, "char_ids": char_ids, "char_index": char_index,
                    "lengths": np.array([len(s) for s in sentences], dtype=np.int64)}
        if self.bigrams:
            features["bigram_ids"] = self._bigram_ids(sentences, seq)
        return features

    def _bigram_ids(self, sentences: Sequence[Sequence[str]], seq: int) -> np.ndarray:
        """Each token's bigram with its right neighbour (``</s>`` after the last), UNK when unseen."""
        ids = np.zeros((len(sentences), seq), dtype=np.int64)
        for b, sentence in enumerate(sentences):
            keys = [self.key(t) for t in sentence]
            pairs = [f"{a}\t{n}" for a, n in zip(keys, [*keys[1:], "</s>"], strict=True)]
            ids[b, : len(pairs)] = [self.bigram_index.get(p, self.unk) for p in pairs]
        return ids
