"""Reading pretrained word vectors: word2vec / GloVe text files and spaCy vectors tables.

Text: one word per line followed by its values, separated by spaces; word2vec adds an optional
first line ``"<count> <dim>"``; files may be gzipped (``.gz``) and are sorted by frequency.
spaCy: a pipeline folder (``en_core_web_md``) or a ``spacy init vectors`` output folder, read as
plain data (``vocab/vectors`` is a numpy array loaded without pickle, ``key2row`` msgpack,
``strings.json`` JSON); nothing of the pipeline is loaded or run.

Vectors are read once, when an encoder is built from a corpus; afterwards they live in the
model's weights. :func:`open_vectors` picks the reader and says whether the vectors are cased.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tagpipe.errors import CorpusError, TagpipeError

_CASE_SAMPLE = 20_000  # words read from the top of a text file to tell whether it is cased


@dataclass(frozen=True)
class TextVectors:
    """A GloVe / word2vec text file."""

    path: Path
    cased: bool

    def read(self, vocab: Container[str] | None, *, limit: int | None = None,
             normalize: Callable[[str], str] | None = None) -> tuple[list[str], Tensor]:
        return read_word_vectors(self.path, vocab, limit=limit, normalize=normalize)


@dataclass(frozen=True)
class SpacyVectors:
    """A spaCy vectors table: ``vocab/`` of a pipeline or ``spacy init vectors`` folder."""

    vocab_dir: Path
    cased: bool = True

    def read(self, vocab: Container[str] | None, *, limit: int | None = None,
             normalize: Callable[[str], str] | None = None) -> tuple[list[str], Tensor]:
        """The words kept and their rows, as :func:`read_word_vectors` keeps them.

        A spaCy table has no frequency order, so the ``limit`` words beyond ``vocab`` are one
        key per row, rows in table order (pruned tables map many keys to a row: a lowercase key
        speaks for it when there is one, as the cased lookup falls back to it; then the shortest),
        covering as many distinct vectors as the limit allows.
        """
        table, keys = _read_spacy_table(self.vocab_dir)
        words: list[str] = []
        rows: list[int] = []
        seen: set[str] = set()
        spare: dict[int, str] = {}
        for word, row in keys:
            key = normalize(word) if normalize else word
            if key in seen:
                continue
            if vocab is None or key in vocab:
                seen.add(key)
                words.append(key)
                rows.append(row)
            elif limit and (row not in spare or _speaker_rank(key) < _speaker_rank(spare[row])):
                spare[row] = key
        for row in sorted(spare)[: limit or 0]:
            if spare[row] not in seen:
                seen.add(spare[row])
                words.append(spare[row])
                rows.append(row)
        return words, torch.from_numpy(table[rows]) if rows else torch.zeros(0, table.shape[1])


def _speaker_rank(key: str) -> tuple[bool, int, str]:
    return key != key.lower(), len(key), key


def open_vectors(path: str | Path) -> TextVectors | SpacyVectors:
    """The vectors at ``path`` (a text file, or a spaCy folder holding ``vocab/vectors``), checked
    enough to fail before training starts: a missing path or unknown layout is one
    :class:`TagpipeError` naming it. ``~`` is expanded (configs name the data folder that way)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for vocab_dir in (path / "vocab", path):
            if (vocab_dir / "vectors").is_file() and (vocab_dir / "key2row").is_file():
                return SpacyVectors(vocab_dir)
        raise TagpipeError(f"{path}: a folder without vocab/vectors and vocab/key2row; expected a spaCy pipeline "
                           "or `spacy init vectors` folder, or a GloVe/word2vec text file")
    if not path.is_file():
        raise TagpipeError(f"{path}: no such vectors file or folder")
    words, _ = read_word_vectors(path, (), limit=_CASE_SAMPLE)
    return TextVectors(path, cased=any(w != w.lower() for w in words))


def _read_spacy_table(vocab_dir: Path):
    """``(table [rows, dim] float32 numpy, [(word, row), ...])`` from a spaCy ``vocab/`` folder."""
    import numpy
    import srsly
    from spacy.strings import hash_string

    try:
        with open(vocab_dir / "vectors", "rb") as f:
            table = numpy.load(f, allow_pickle=False)
        key2row = srsly.read_msgpack(vocab_dir / "key2row")
        strings = json.loads((vocab_dir / "strings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TagpipeError(f"{vocab_dir}: not a readable spaCy vectors table ({exc})") from None
    if table.ndim != 2 or not isinstance(key2row, dict) or not isinstance(strings, list):
        raise TagpipeError(f"{vocab_dir}: not a spaCy vectors table (vectors {table.shape}, key2row, strings.json)")
    keys = [(s, key2row[h]) for s in strings if isinstance(s, str) and (h := hash_string(s)) in key2row]
    return numpy.ascontiguousarray(table, dtype=numpy.float32), keys


def read_word_vectors(
    path: str | Path,
    vocab: Container[str] | None = None,
    *,
    limit: int | None = None,
    normalize: Callable[[str], str] | None = None,
) -> tuple[list[str], Tensor]:
    """The words kept and their vectors ``[len(words), dim]`` (float32), in file order.

    A word is kept when it is in ``vocab`` (all words when ``vocab`` is None) or among the
    file's first ``limit`` distinct words (files are sorted by frequency, so this adds the common
    words a training corpus lacks). ``normalize`` maps file words to vocabulary keys before
    matching (e.g. lowercasing); when two words normalise alike the first, more frequent, wins.

    Every line's field count is checked; values are parsed only for kept words, so reading a
    large file to pick a few thousand rows stays fast. Malformed input raises
    :class:`CorpusError` naming the file and 1-based line.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    words: list[str] = []
    rows: list[list[float]] = []
    seen: set[str] = set()
    dim: int | None = None
    distinct = 0
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CorpusError(str(path), lineno, f"not UTF-8: {exc.reason}") from None
            if not line.strip():
                continue
            parts = line.rstrip().split(" ")
            if dim is None and lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec header: "<count> <dim>"
                if dim < 1:
                    raise CorpusError(str(path), lineno, f"header gives dimension {dim}")
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise CorpusError(str(path), lineno, "expected a word followed by its vector values")
            if len(parts) < dim + 1:
                found = len(parts) - 1
                raise CorpusError(str(path), lineno, f"expected a word and {dim} values, got {found}")
            # GloVe 840B has words with spaces in them: the values are always the last ``dim``.
            word = " ".join(parts[: len(parts) - dim])
            key = normalize(word) if normalize else word
            if key in seen:
                continue
            distinct += 1
            if (vocab is None or key in vocab) or (limit is not None and distinct <= limit):
                try:
                    rows.append([float(v) for v in parts[len(parts) - dim :]])
                except ValueError as exc:
                    raise CorpusError(str(path), lineno, f"bad vector value for {word!r}: {exc}") from None
                words.append(key)
            seen.add(key)
    if dim is None:
        raise CorpusError(str(path), 1, "no vectors found in the file")
    vectors = torch.tensor(rows, dtype=torch.float32) if rows else torch.zeros(0, dim)
    return words, vectors
