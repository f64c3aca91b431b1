"""The token features every from-scratch encoder shares: word, character, casing (and bigram) embeddings.

A token's word row comes from its lookup key (lowercased and digits zeroed by default, or cased
when the pretrained vectors are), the characters keep the original spelling and a small casing
embedding says how the word was written. Rare training words are replaced by UNK now and then
(``alpha / (alpha + count)``, Kiperwasser & Goldberg 2016) so the UNK row is trained on words
that behave like the unseen ones met at test time.

:class:`WordFeatureEncoder` owns the vocabularies, ``featurize``, saving and loading, and
``embed`` (the ``[B, T, input_dim]`` input of a contextual layer); the BiLSTM, ID-CNN and
transformer encoders subclass it and add only their context layers. The weights keep the names
they had when the BiLSTM held them all (``word_embed``, ``char_encoder``, ...), so older model
folders load unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tagpipe.components import Encoder, lengths_to_mask
from tagpipe.errors import ConfigValueError, check_config_keys
from tagpipe.model_folder import Field, check_fields
from tagpipe.plugins.encoders.context_bilstm import locked_dropout
from tagpipe.plugins.encoders.token_features import (
    BOW,
    CASINGS,
    EOW,
    UNK,
    CharCNN,
    CharLSTM,
    casing,
    char_form,
    embedding,
    normalizer,
    read_vocab,
    token_bigrams,
    unk_probabilities,
)

_CACHE_LIMIT = 500_000  # token strings whose ids featurize remembers
VOCAB_FILE = "vocab.json"
#: kinds and ranges of the feature config's values (the upper bounds are far above any useful size: a typo's
#: ``10**9`` is refused before anything is allocated)
FEATURE_FIELDS = {
    "word_dim": Field((int, None), low=1, high=4096),
    "lowercase": Field((bool, None)),
    "normalize_digits": Field((bool,)),
    "min_count": Field((int,), low=1),
    "word_dropout": Field((float,), low=0),
    "char_encoder": Field((str,), choices=("cnn", "lstm")),
    "char_dim": Field((int,), low=1, high=1024),
    "char_hidden": Field((int,), low=1, high=4096),
    "casing_dim": Field((int,), low=1, high=1024),
    "max_word_len": Field((int,), low=1, high=10_000),
    "dropout": Field((float,), low=0, high=0.99),
    "locked_dropout": Field((bool,)),
    "pretrained_vectors": Field((str, None)),
    "pretrained_limit": Field((int,), low=0),
    "freeze_vectors": Field((bool,)),
    "bigram_dim": Field((int,), low=0, high=4096),
    "bigram_min_count": Field((int,), low=1),
}


@dataclass
class FeatureConfig:
    """The token features' hyper-parameters; see docs/encoders.md for the reasons behind the defaults."""

    #: the encoder's name in messages; subclasses add their own fields and ranges
    kind: ClassVar[str] = "word features"
    extra_fields: ClassVar[dict[str, Field]] = {}

    word_dim: int | None = None  # None: the vectors' dimension, or 100 without vectors
    lowercase: bool | None = None  # None: lowercased unless the pretrained vectors are cased
    normalize_digits: bool = True
    min_count: int = 1
    word_dropout: float = 0.25  # alpha of alpha / (alpha + count); 0 turns it off
    char_encoder: str = "cnn"  # "cnn" or "lstm"
    char_dim: int = 30
    char_hidden: int = 50  # CNN filters, or LSTM units per direction
    casing_dim: int = 12
    max_word_len: int = 30
    dropout: float = 0.5
    locked_dropout: bool = True  # one dropout mask per sentence (variational), not per token
    pretrained_vectors: str | None = None  # GloVe/word2vec text file, or a spaCy pipeline / vectors folder
    pretrained_limit: int = 50_000  # also add the vectors' N most frequent words to the vocabulary
    freeze_vectors: bool = False  # keep the pretrained rows as they are (the other rows still train)
    bigram_dim: int = 0  # > 0: also embed each token with its right neighbour (Chinese characters); 0: off
    bigram_min_count: int = 2  # rarer training bigrams read as UNK

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> FeatureConfig:
        """A config from its dict, each key known and each value of its kind and range, else a
        ``ValueError`` (``ConfigKeyError`` / ``ConfigValueError``) naming the key."""
        check_config_keys(f"{cls.kind} encoder config", config, (f.name for f in fields(cls)))
        check_fields(f"{cls.kind} encoder config", config, {**FEATURE_FIELDS, **cls.extra_fields})
        return cls(**config)


class WordFeatureEncoder(Encoder):
    """Vocabularies, featurizing and the embedding layer of an encoder trained from scratch.

    Subclasses set ``config_class``, build their context layers over ``self.input_dim`` in
    ``__init__`` (after calling ours) and implement ``forward``, usually as
    ``context(self.embed(features))``.
    """

    config_class: type[FeatureConfig] = FeatureConfig

    def __init__(
        self,
        cfg: FeatureConfig,
        words: list[str],
        counts: list[int],
        chars: list[str],
        vectors: Tensor | None = None,
        bigrams: list[str] | None = None,
        bigram_counts: list[int] | None = None,
        pretrained_rows: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.words, self.counts, self.chars = words, counts, chars
        self.pretrained_rows = len(vectors) if vectors is not None else pretrained_rows
        self.bigrams, self.bigram_counts = bigrams or ["<pad>", "<unk>"], bigram_counts or [0, 0]
        self.word_index = {w: i for i, w in enumerate(words) if i > UNK}  # specials: ids only
        self.bigram_index = {b: i for i, b in enumerate(self.bigrams) if i > UNK}
        self.char_index = {c: i for i, c in enumerate(chars)}
        self._cache: dict[str, tuple[int, int, list[int]]] = {}
        self._norm = normalizer(cfg.lowercase is not False, cfg.normalize_digits)
        self._cased = cfg.lowercase is False
        word_dim = cfg.word_dim or 100

        self.word_embed = embedding(len(words), word_dim)
        if vectors is not None:
            with torch.no_grad():
                self.word_embed.weight[2 : 2 + len(vectors)] = vectors
        if cfg.freeze_vectors and self.pretrained_rows:
            trainable = torch.ones(len(words), 1)
            trainable[2 : 2 + self.pretrained_rows] = 0.0
            self.register_buffer("_trainable_rows", trainable, persistent=False)
            self.word_embed.weight.register_hook(lambda grad: grad * self._trainable_rows)
        char_cls = CharCNN if cfg.char_encoder == "cnn" else CharLSTM
        self.char_encoder = char_cls(len(chars), cfg.char_dim, cfg.char_hidden, cfg.dropout)
        self.casing_embed = embedding(len(CASINGS), cfg.casing_dim)
        self.bigram_embed = embedding(len(self.bigrams), cfg.bigram_dim) if cfg.bigram_dim else None
        self.input_dim = word_dim + self.char_encoder.output_dim + cfg.casing_dim + cfg.bigram_dim
        # P(replace by UNK) per word id; derived from counts, so not saved with the weights.
        self.register_buffer("unk_prob", unk_probabilities(counts, cfg.word_dropout), persistent=False)
        bigram_unk = unk_probabilities(self.bigram_counts, cfg.word_dropout)
        self.register_buffer("bigram_unk_prob", bigram_unk, persistent=False)

    # -- building and saving -------------------------------------------------------------

    @classmethod
    def from_corpus(cls, sentences: Sequence[Sequence[str]], **config: Any) -> WordFeatureEncoder:
        """Vocabularies from the training tokens (plus pretrained words, when vectors are given).

        Word ids: PAD=0, UNK=1, then the pretrained words kept (the training words the vectors
        know, and the vectors' ``pretrained_limit`` most frequent words), then the training words
        with ``count >= min_count`` the vectors lack (most frequent first). With vectors and
        ``lowercase`` unset, words are looked up cased exactly when the vectors are cased.
        """
        cfg = cls.config_class.from_dict(config)
        vectors = None
        words = ["<pad>", "<unk>"]
        if cfg.pretrained_vectors:
            from tagpipe.plugins.encoders.vectors import open_vectors

            source = open_vectors(cfg.pretrained_vectors)
            if cfg.lowercase is None:
                cfg.lowercase = not source.cased
            norm = normalizer(cfg.lowercase, cfg.normalize_digits)
            word_counts = _count_words(sentences, norm)
            train_words = [w for w, c in word_counts.most_common() if c >= cfg.min_count]
            kept, vectors = source.read(set(train_words), limit=cfg.pretrained_limit, normalize=norm)
            if cfg.word_dim is not None and cfg.word_dim != vectors.size(1):
                raise ConfigValueError(f"{cls.config_class.kind} encoder config: word_dim={cfg.word_dim} but "
                                       f"{cfg.pretrained_vectors} has {vectors.size(1)}-d vectors (leave word_dim out)")
            cfg.word_dim = vectors.size(1)
            words += kept
        else:
            cfg.lowercase = True if cfg.lowercase is None else cfg.lowercase
            norm = normalizer(cfg.lowercase, cfg.normalize_digits)
            word_counts = _count_words(sentences, norm)
            train_words = [w for w, c in word_counts.most_common() if c >= cfg.min_count]
        cfg.word_dim = cfg.word_dim or 100
        present = set(words[2:])
        words += [w for w in train_words if w not in present]
        counts = [0, 0] + [word_counts.get(w, 0) for w in words[2:]]
        char_counts: Counter[str] = Counter()
        for sentence in sentences:
            for token in sentence:
                char_counts.update(char_form(token, cfg.normalize_digits))
        chars = ["<pad>", "<unk>", "<bow>", "<eow>"] + [c for c, _ in char_counts.most_common()]
        bigrams, bigram_counts = ["<pad>", "<unk>"], [0, 0]
        if cfg.bigram_dim:
            counted = Counter(b for sentence in sentences for b in token_bigrams([norm(t) for t in sentence]))
            kept_bigrams = [(b, c) for b, c in counted.most_common() if c >= cfg.bigram_min_count]
            bigrams += [b for b, _ in kept_bigrams]
            bigram_counts += [c for _, c in kept_bigrams]
        return cls(cfg, words, counts, chars, vectors, bigrams, bigram_counts)

    @classmethod
    def from_assets(cls, path: Path, config: dict[str, Any]) -> WordFeatureEncoder:
        cfg = cls.config_class.from_dict(config)
        cfg.lowercase = True if cfg.lowercase is None else cfg.lowercase
        vocab = read_vocab(Path(path) / VOCAB_FILE)
        return cls(cfg, vocab["words"], vocab["counts"], vocab["chars"], bigrams=vocab.get("bigrams"),
                   bigram_counts=vocab.get("bigram_counts"), pretrained_rows=vocab.get("pretrained_rows", 0))

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def save_assets(self, path: Path) -> None:
        vocab: dict[str, Any] = {"words": self.words, "counts": self.counts, "chars": self.chars}
        if self.pretrained_rows:
            vocab["pretrained_rows"] = self.pretrained_rows
        if self.bigram_embed is not None:
            vocab.update(bigrams=self.bigrams, bigram_counts=self.bigram_counts)
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")

    def parameter_groups(self, lr: float, pretrained_lr: float | None = None) -> list[dict[str, Any]]:
        """One group; frozen vectors' table in its own, without weight decay (it would shrink the frozen rows)."""
        if not (self.cfg.freeze_vectors and self.pretrained_rows):
            return super().parameter_groups(lr, pretrained_lr)
        table = self.word_embed.weight
        rest = [p for p in self.parameters() if p is not table]
        return [{"params": rest, "lr": lr}, {"params": [table], "lr": lr, "weight_decay": 0.0}]

    # -- batches -----------------------------------------------------------------------------

    def word_id(self, token: str) -> int:
        """The word row of ``token``: its key, else (cased lookup) its lowercased then capitalised key, else UNK.

        Cased tables hold "Paris" and "apple" but not "PARIS" or "Apple" (a headline, a sentence start).
        """
        key = self._norm(token)
        word = self.word_index.get(key)
        if word is None and self._cased:
            word = self.word_index.get(key.lower())
            if word is None:
                word = self.word_index.get(key.capitalize())
        return UNK if word is None else word

    def _token(self, token: str) -> tuple[int, int, list[int]]:
        """(word id, casing id, char ids with BOW/EOW) of one token string, cached."""
        hit = self._cache.get(token)
        if hit is None:
            cfg = self.cfg
            chars = [self.char_index.get(c, UNK) for c in char_form(token, cfg.normalize_digits)]
            if len(chars) > cfg.max_word_len:  # keep both ends: prefixes and suffixes carry the signal
                head = cfg.max_word_len // 2
                chars = chars[:head] + chars[len(chars) - (cfg.max_word_len - head) :]
            hit = (self.word_id(token), casing(token), [BOW, *chars, EOW])
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = hit
        return hit

    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """``word_ids``/``casing``/``char_index`` ``[B, T]``, ``char_ids`` ``[U, L]``, ``lengths`` ``[B]``.

        With ``bigram_dim``, ``bigram_ids`` ``[B, T]`` too: each token with its right neighbour.
        ``char_ids`` holds the characters of the batch's ``U`` distinct token strings (a batch of
        128 sentences has ~40% distinct tokens), ``char_index`` says which row each token reads,
        so inference runs the character encoder once per distinct word. ``T`` is the longest
        sentence and ``L`` the longest word (+2 markers); padding is 0. Char ids are scattered
        into place with one indexing op, not nested lists.
        """
        lengths = [len(s) for s in sentences]
        batch, seq = len(sentences), max(lengths, default=0)
        word_ids = [0] * (batch * seq)
        casings = [0] * (batch * seq)
        char_index = [0] * (batch * seq)
        distinct: dict[str, int] = {}
        flat_chars: list[int] = []
        char_lens: list[int] = []
        for b, sentence in enumerate(sentences):
            base = b * seq
            for t, token in enumerate(sentence):
                word, case, chars = self._token(token)
                word_ids[base + t] = word
                casings[base + t] = case
                row = distinct.get(token)
                if row is None:
                    row = distinct[token] = len(distinct)
                    flat_chars += chars
                    char_lens.append(len(chars))
                char_index[base + t] = row
        width = max(char_lens, default=1)
        char_ids = torch.zeros(len(distinct) * width, dtype=torch.long)
        if flat_chars:
            lens = torch.tensor(char_lens)
            starts = torch.arange(len(distinct)) * width
            offsets = torch.cumsum(lens, 0) - lens  # where each word's chars start in flat_chars
            pos = torch.arange(len(flat_chars)) - torch.repeat_interleave(offsets, lens)
            char_ids[torch.repeat_interleave(starts, lens) + pos] = torch.tensor(flat_chars)
        features = {
            "word_ids": torch.tensor(word_ids, dtype=torch.long).view(batch, seq),
            "casing": torch.tensor(casings, dtype=torch.long).view(batch, seq),
            "char_ids": char_ids.view(len(distinct), width),
            "char_index": torch.tensor(char_index, dtype=torch.long).view(batch, seq),
            "lengths": torch.tensor(lengths, dtype=torch.long),
        }
        if self.bigram_embed is not None:
            features["bigram_ids"] = self._bigram_ids(sentences, seq)
        return features

    def _bigram_ids(self, sentences: Sequence[Sequence[str]], seq: int) -> Tensor:
        """``[B, T]`` ids of each token's bigram with its right neighbour (UNK when unseen, 0 past the end)."""
        ids = torch.zeros(len(sentences), seq, dtype=torch.long)
        index = self.bigram_index
        for b, sentence in enumerate(sentences):
            row = [index.get(g, UNK) for g in token_bigrams([self._norm(t) for t in sentence])]
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids

    def embed(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, T, input_dim]``: word (word dropout in training), char, casing and bigram features, dropped out."""
        word_ids, lengths = features["word_ids"], features["lengths"]
        batch, seq = word_ids.shape
        mask = lengths_to_mask(lengths.to(word_ids.device), seq)  # shape: [B, T]
        words = self.word_embed(self._word_dropout(word_ids, self.unk_prob))  # shape: [B, T, word_dim]
        char_feats = words.new_zeros(batch, seq, self.char_encoder.output_dim)
        chars, rows = features["char_ids"], features["char_index"][mask]  # only real tokens
        if self.training:  # one row per token: each occurrence draws its own dropout
            encoded = self.char_encoder(chars[rows])
        else:  # once per distinct word
            encoded = self.char_encoder(chars)[rows]
        char_feats[mask] = encoded.to(char_feats.dtype)  # under autocast the encoder may answer in bf16/fp16
        parts = [words, char_feats, self.casing_embed(features["casing"])]
        if self.bigram_embed is not None:
            bigram_ids = self._word_dropout(features["bigram_ids"], self.bigram_unk_prob)
            parts.append(self.bigram_embed(bigram_ids))  # shape: [B, T, bigram_dim]
        return self._dropout(torch.cat(parts, dim=2))  # shape: [B, T, input_dim]

    def _word_dropout(self, ids: Tensor, unk_prob: Tensor | None) -> Tensor:
        """In training, each id replaced by UNK with its probability in ``unk_prob``."""
        if not self.training or unk_prob is None:
            return ids
        return ids.masked_fill(torch.rand(ids.shape, device=ids.device) < unk_prob[ids], UNK)

    def _dropout(self, x: Tensor) -> Tensor:
        if self.cfg.locked_dropout:
            return locked_dropout(x, self.cfg.dropout, self.training)
        return nn.functional.dropout(x, self.cfg.dropout, self.training)



def _count_words(sentences: Sequence[Sequence[str]], norm) -> Counter[str]:
    """How often each lookup key occurs in the training tokens."""
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(norm(t) for t in sentence)
    return counts
