"""The sentence record every reader yields and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sentence:
    """One tokenised sentence with whatever annotation its corpus had.

    ``tags`` are the labels of the chosen column exactly as the file spells them (their scheme,
    IOB1/IOB2/BIOES, is the reader's ``scheme`` option); ``source``/``line`` say where the
    sentence starts so later errors can point back at the file.
    """

    tokens: list[str]
    tags: list[str] | None = None
    upos: list[str] | None = None
    xpos: list[str] | None = None
    heads: list[int] | None = None  # 1-based head per token, 0 for the root (CoNLL-U)
    deprels: list[str] | None = None
    spaces: list[bool] | None = None  # whether a space follows each token, when known
    text: str | None = None  # the raw text, when the corpus gives it
    id: str | None = None
    doc_start: bool = False  # first sentence after a -DOCSTART- line (CoNLL) or "# newdoc" (CoNLL-U)
    source: str | None = None
    line: int | None = None
    extra: dict = field(default_factory=dict)  # other fields a format carries through (e.g. JSONL keys)

    def __len__(self) -> int:
        return len(self.tokens)
