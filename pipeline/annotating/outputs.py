"""What ``tagpipe annotate`` writes: JSONL records, CoNLL columns, a spaCy DocBin, displaCy pages.

Each output is split in two so that work can run in worker processes: ``encode(doc, item)`` (a
module-level function, so it pickles by name) turns one annotated doc into bytes where the doc is,
and the :class:`Output` in the parent appends those bytes to a *partial* file beside the target.
The partial file only ever grows, so a byte offset recorded after a flush is a safe point to
resume from (``--resume`` truncates it there). ``finish`` turns the partial file into the target
and renames it into place, so the target is either the previous file or the complete new one.
"""

from __future__ import annotations

import html
import json
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tagpipe.annotating.sources import Item
from tagpipe.corpora.io import replacing, write_atomically
from tagpipe.errors import TagpipeError
from tagpipe.names import COLUMNS_EXTENSION

RecordSerializer = Callable[[Any, Item], bytes]  # a doc and its item -> the bytes one output writes for it
OUTPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll", ".spacy": "spacy"}
_BLOB = struct.Struct("<Q")  # length prefix of one DocBin in a .spacy partial file
_WHITESPACE = re.compile(r"[ \t\n\r\x0b\x0c\x1c-\x1f]+")


# -- encoders (run where the doc was annotated) ---------------------------------------------
def encode_jsonl(doc: Any, item: Item) -> bytes:
    """The annotate record, one JSON object a line."""
    from tagpipe.annotating.records import doc_to_record

    return (json.dumps(doc_to_record(doc, item.id, item.extra), ensure_ascii=False) + "\n").encode("utf-8")


def encode_conll(doc: Any, item: Item) -> bytes:
    """``token IOB2-tag`` lines and a blank line; whitespace tokens are left out (a CoNLL field
    cannot hold them) and an empty document writes nothing. A tagging model's tags
    (``doc._.tagpipe_tags``) are the tag column, before the entities' column when an entity
    model ran too (``token TAG IOB2``, as in CoNLL-2003), alone otherwise (``token TAG``). A component that
    sets ``Doc._.tagpipe_columns`` (a multi-task model: one column per head) gets exactly those columns."""
    columns = doc._.get(COLUMNS_EXTENSION) if doc.has_extension(COLUMNS_EXTENSION) else None
    tags = doc._.get("tagpipe_tags") if doc.has_extension("tagpipe_tags") else None
    entities = columns is None and (tags is None or doc.has_annotation("ENT_IOB"))
    tags = None if columns is not None else tags
    lines = []
    for i, token in enumerate(doc):
        if token.is_space:
            continue
        fields = [_WHITESPACE.sub("_", token.text)]
        for column in columns or ():
            fields.append(_WHITESPACE.sub("_", column[i] or "_"))
        if tags is not None:
            fields.append(_WHITESPACE.sub("_", tags[i] or "_"))
        if entities:
            iob = token.ent_iob_
            fields.append(f"{iob}-{token.ent_type_}" if iob in ("B", "I") else "O")
        lines.append(" ".join(fields))
    return ("\n".join(lines) + "\n\n").encode("utf-8") if lines else b""


def encode_spacy(doc: Any, item: Item) -> bytes:
    """A one-doc DocBin, length-prefixed; the partial file is a sequence of them."""
    from spacy.tokens import DocBin

    data = DocBin(docs=[doc], store_user_data=True).to_bytes()  # user data: extension values (confidences)
    return _BLOB.pack(len(data)) + data


def encode_html(doc: Any, item: Item) -> bytes:
    """displaCy's manual entity format, one JSON object a line, rendered into pages at the end."""
    from spacy.tokens import Span

    scored = Span.has_extension("tagpipe_score")
    ents = []
    for e in doc.ents:
        ent = {"start": e.start_char, "end": e.end_char, "label": e.label_}
        score = e._.tagpipe_score if scored else None
        if score is not None:
            ent["score"] = round(float(score), 4)
        ents.append(ent)
    return (json.dumps({"text": doc.text, "ents": ents, "title": str(item.id)}) + "\n").encode("utf-8")


# -- outputs (in the parent) ----------------------------------------------------------------
class Output:
    """One target file fed through an append-only partial file."""

    encoder: RecordSerializer = staticmethod(encode_jsonl)

    def __init__(self, target: str) -> None:
        self.target = Path(target)
        self.partial = self.target.parent / f".{self.target.name}.partial"
        self._file: IO[bytes] | None = None

    @property
    def resumable(self) -> bool:
        return True

    def open(self, offset: int | None = None) -> None:
        """Start a fresh partial file, or continue one from ``offset`` bytes (what a checkpoint saw)."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if offset is None:
            self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in finish/close
            return
        if not self.partial.is_file() or self.partial.stat().st_size < offset:
            raise TagpipeError(f"cannot resume: {self.partial} is missing or shorter than recorded; "
                               "run again without --resume")
        self._file = open(self.partial, "r+b")  # noqa: SIM115
        self._file.truncate(offset)
        self._file.seek(offset)

    def write(self, payload: bytes) -> None:
        self._file.write(payload)  # type: ignore[union-attr]

    def sync(self) -> None:
        """Flush and fsync: the partial file is complete on disk (before the sidecar says so)."""
        self._file.flush()  # type: ignore[union-attr]
        os.fsync(self._file.fileno())  # type: ignore[union-attr]

    def checkpoint(self) -> int:
        """Flush and return the partial file's size: everything before it is on disk."""
        self._file.flush()  # type: ignore[union-attr]
        return self._file.tell()  # type: ignore[union-attr]

    def close(self) -> None:
        """Stop writing, keeping the partial file for ``--resume``."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> None:
        """Make the target from the partial file and rename it into place."""
        self.sync()
        self.close()
        self.finalize()

    def finalize(self) -> None:
        """Turn the complete, closed partial file into the target (repeatable until it succeeds:
        the partial file is removed last)."""
        with replacing(self.target) as tmp:
            os.replace(self.partial, tmp)

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


class JsonlOutput(Output):
    encoder = staticmethod(encode_jsonl)


class ConllOutput(Output):
    encoder = staticmethod(encode_conll)


class SpacyOutput(Output):
    """A DocBin, built at the end from the partial file's one-doc DocBins (DocBin is one
    in-memory object, so this step holds all docs; JSONL and CoNLL never do)."""

    encoder = staticmethod(encode_spacy)

    def finalize(self) -> None:
        from spacy.tokens import DocBin

        merged = DocBin(store_user_data=True)
        for blob in _blobs(self.partial):
            merged.merge(DocBin(store_user_data=True).from_bytes(blob))
        write_atomically(self.target, merged.to_bytes())
        self.partial.unlink()


class HtmlOutput(Output):
    """displaCy entity pages of ``page_size`` documents: ``FILE.html`` then ``FILE-2.html``, ...,
    or ``DIR/page-0001.html``, ... with an ``index.html`` when the target is not an .html file."""

    encoder = staticmethod(encode_html)

    def __init__(self, target: str, page_size: int = 1000) -> None:
        super().__init__(target)
        self.page_size = page_size
        self.is_file = self.target.suffix.lower() in (".html", ".htm")
        if not self.is_file:
            self.partial = self.target / ".annotate-html.partial"

    def page_path(self, number: int) -> Path:
        if self.is_file:
            return self.target if number == 1 else self.target.with_name(f"{self.target.stem}-{number}.html")
        return self.target / f"page-{number:04d}.html"

    def finalize(self) -> None:

        pages = []
        with open(self.partial, "rb") as lines:
            while chunk := [_escaped(json.loads(line)) for _, line in zip(range(self.page_size), lines,
                                                                            strict=False)]:
                path = self.page_path(len(pages) + 1)
                write_atomically(path, render_page(chunk))
                pages.append(path)
        if not self.is_file:
            links = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.name)}</a></li>' for p in pages)
            write_atomically(self.target / "index.html",
                             f"<!DOCTYPE html>\n<html><body><ul>\n{links}\n</ul></body></html>\n")
        self.partial.unlink()


#: marks each entity in our displaCy template; replaced, in order, by the entity's tooltip
_TITLE_SLOT = "{{tagpipe-title}}"
#: colours for labels displaCy has none for (CoNLL's PER, MISC, a plugin's labels): stable per label
_PALETTE = ("#f4a582", "#92c5de", "#c2a5cf", "#a6dba0", "#fddbc7", "#d1e5f0", "#e7d4e8", "#d9f0d3", "#fee08b",
            "#c7eae5")


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour for every label: displaCy's own where it has one, else one picked from the label's name."""
    from spacy.displacy.render import DEFAULT_LABEL_COLORS

    return {label.upper(): DEFAULT_LABEL_COLORS.get(label.upper()) or
            _PALETTE[zlib.crc32(label.upper().encode()) % len(_PALETTE)] for label in labels}


def render_page(entries: list[dict[str, Any]]) -> str:
    """displaCy entity markup for ``entries`` (already escaped), every label coloured, each entity with a
    tooltip giving its label and confidence."""
    from spacy import displacy
    from spacy.displacy.templates import TPL_ENT

    labels = {ent["label"] for entry in entries for ent in entry["ents"]}
    template = TPL_ENT.replace('<mark class="entity"', f'<mark class="entity" title="{_TITLE_SLOT}"', 1)
    rendered = displacy.render(entries, style="ent", manual=True, page=True, minify=True,
                               options={"colors": label_colors(labels), "template": template})
    titles = [ent["label"] + (f", confidence {ent['score']:.2f}" if "score" in ent else "")
              for entry in entries for ent in entry["ents"]]
    slot = _TITLE_SLOT.replace("{{", "{").replace("}}", "}")
    pieces = rendered.split(slot)
    if len(pieces) != len(titles) + 1:  # displaCy skipped or split an entity: no tooltips rather than wrong ones
        return rendered.replace(f' title="{slot}"', "")
    return "".join(piece + (titles[i] if i < len(titles) else "") for i, piece in enumerate(pieces))


def _escaped(page: dict[str, Any]) -> dict[str, Any]:
    """A displaCy entry whose title (the document id) and labels are safe in HTML: displaCy escapes
    the text but puts the title and the labels into the page as they are."""
    page["title"] = html.escape(page["title"])
    for ent in page["ents"]:
        ent["label"] = html.escape(ent["label"])
    return page


class StdoutOutput(Output):
    """``-o -``: bytes go straight to stdout (no partial file, so no ``--resume``)."""

    def __init__(self, encoder: RecordSerializer) -> None:
        super().__init__("-")
        self.encoder = encoder  # type: ignore[assignment]

    @property
    def resumable(self) -> bool:
        return False

    def open(self, offset: int | None = None) -> None:
        self._file = sys.stdout.buffer

    def sync(self) -> None:
        self._file.flush()  # type: ignore[union-attr]  # a pipe or a terminal cannot be fsynced

    def checkpoint(self) -> int:
        self._file.flush()  # type: ignore[union-attr]
        return 0

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file = None

    def finish(self) -> None:
        self.close()

    def discard(self) -> None:
        self.close()


def make_output(target: str, fmt: str | None = None) -> Output:
    """The output for ``--output`` (format from ``fmt`` or the extension; JSONL for stdout)."""
    classes = {"jsonl": JsonlOutput, "conll": ConllOutput, "spacy": SpacyOutput}
    if fmt is None:
        fmt = "jsonl" if target == "-" else OUTPUT_FORMATS.get(Path(target).suffix.lower())
        if fmt is None:
            raise TagpipeError(f"cannot tell the output format of {target!r} from its extension; use "
                               f"{', '.join(OUTPUT_FORMATS)} or --output-format ({', '.join(classes)})")
    if fmt not in classes:
        raise TagpipeError(f"unknown output format {fmt!r}; expected one of {', '.join(classes)}")
    if target == "-":
        if fmt == "spacy":
            raise TagpipeError("a .spacy DocBin cannot be streamed to stdout; give --output FILE.spacy")
        return StdoutOutput(classes[fmt].encoder)
    return classes[fmt](target)


def _blobs(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while header := stream.read(_BLOB.size):
            (size,) = _BLOB.unpack(header)
            yield stream.read(size)
