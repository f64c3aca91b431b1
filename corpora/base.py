"""The corpus-format contract, kept free of torch so readers import fast."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tagpipe.corpora.types import Sentence


class CorpusFormat:
    """A corpus format: ``read`` yields :class:`Sentence` records; ``write`` is optional.

    Readers stream (a generator over the file) and raise :class:`tagpipe.errors.CorpusError`
    naming the file and 1-based line for malformed input.
    """

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()

    def read(self, path: str | Path, **options: Any) -> Iterator[Sentence]:
        raise NotImplementedError

    def write(self, sentences: Iterator[Sentence] | Sequence[Sentence], path: str | Path, **options: Any) -> None:
        raise NotImplementedError(f"format {self.name!r} cannot be written")
