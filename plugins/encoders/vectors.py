"""Reading pretrained word vectors from word2vec / GloVe text files.

Both formats are one word per line followed by its values, separated by spaces; word2vec adds
an optional first line ``"<count> <dim>"``. Files may be gzipped (``.gz``). Vectors are read
once, when an encoder is built from a corpus; afterwards they live in the model's weights.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Container
from pathlib import Path

import torch
from torch import Tensor

from tagpipe.errors import CorpusError


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
