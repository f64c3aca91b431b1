"""What a multi-task model's heads are: ``--columns``, ``--task-weights``, ``--head-decoders`` and
``--private-layers`` parsed into :class:`HeadSpec` records (torch-free: the CLI parses them before
anything loads).

``--columns ner=3,pos=1,chunk=2`` names each head and the corpus column it learns: a CoNLL column
index counted from 0 at the word column (CoNLL-2003 is ``word POS chunk NER``: 1, 2, 3; negative
indices count from the end) or a CoNLL-U field name (``upos``). A head is a *span* head (entities,
chunks: IOB tags read in ``--scheme``, trained in BIOES, scored by span F1) or a *tag* head (POS:
tags as they are, scored by accuracy); ``NAME=COLUMN:span`` / ``:tag`` says which, and without it
the column's training tags decide (span when every tag is ``O`` or ``PREFIX-TYPE`` of ``--scheme``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tagpipe.errors import TagpipeError

KINDS = ("span", "tag")
#: where the spaCy component puts a head's output (besides ``Doc._.tagpipe_heads``)
TARGETS = ("ents", "tag", "pos", "spans", "none")
#: record fields a head may not be named after (annotate's own, other tasks')
RESERVED = frozenset({"id", "text", "tokens", "entities", "tags", "triples", "generated", "heads"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class HeadSpec:
    """One head: its name, corpus column, kind, decoder, label set and spaCy target."""

    name: str
    column: int | str
    kind: str | None = None  # None until the training tags decide
    decoder: str = "tagpipe.crf.v1"
    decoder_config: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # the model's tags (BIOES for span heads)
    target: str = "none"
    #: a stage between the shared encoder and this head's decoder, seen by no other head:
    #: ``{"name": REGISTRY NAME, "config": {...}}`` of an encoder that runs on features (``from_input``)
    private: dict[str, Any] | None = None

    @property
    def scheme(self) -> str | None:
        """The scheme the model's tags are in: BIOES for span heads, none for tag heads."""
        return "bioes" if self.kind == "span" else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "kind": self.kind, "labels": self.labels,
                "decoder": {"name": self.decoder, "config": self.decoder_config}, "spacy": self.target,
                **({"private": self.private} if self.private else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        return cls(name=data["name"], column=data["column"], kind=data["kind"], decoder=data["decoder"]["name"],
                   decoder_config=dict(data["decoder"].get("config") or {}), labels=list(data["labels"]),
                   target=data.get("spacy", "none"), private=data.get("private"))


def _pairs(value: str | Mapping[str, Any], option: str) -> list[tuple[str, str]]:
    """``a=1,b=2`` (or a config file's object) as ordered ``(name, value)`` pairs."""
    if isinstance(value, Mapping):
        return [(str(k), str(v)) for k, v in value.items()]
    if not isinstance(value, str):
        raise TagpipeError(f"{option} {value!r}: expected NAME=VALUE,...")
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        name, sep, rest = item.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise TagpipeError(f"{option} {value!r}: {item!r} is not NAME=VALUE")
        pairs.append((name.strip(), rest.strip()))
    return pairs


def parse_columns(value: str | Mapping[str, Any]) -> list[HeadSpec]:
    """``--columns``: ``NAME=COLUMN[:span|tag],...`` in order (the first is the main task by default)."""
    heads: list[HeadSpec] = []
    for name, rest in _pairs(value, "--columns"):
        if not _NAME.match(name) or name in RESERVED:
            why = "a name annotate's records already use" if name in RESERVED else "letters, digits and _"
            raise TagpipeError(f"--columns: head name {name!r} is not allowed ({why})")
        if name in {h.name for h in heads}:
            raise TagpipeError(f"--columns: head {name!r} is named twice")
        column, _, kind = rest.partition(":")
        if kind and kind not in KINDS:
            raise TagpipeError(f"--columns: {name}={rest}: the kind after ':' must be span or tag")
        parsed: int | str = int(column) if column.lstrip("-").isdigit() else column
        if parsed == 0:
            raise TagpipeError(f"--columns: {name}=0 is the word column; tag columns count from 1")
        heads.append(HeadSpec(name=name, column=parsed, kind=kind or None))
    if len(heads) < 2:
        raise TagpipeError("--columns: a multi-task model needs at least two heads (NAME=COLUMN,NAME=COLUMN)")
    columns = [h.column for h in heads]
    if len(set(columns)) != len(columns):
        raise TagpipeError("--columns: two heads read the same column")
    return heads


def parse_weights(value: str | Mapping[str, Any] | None, heads: Sequence[HeadSpec]) -> dict[str, float]:
    """``--task-weights ner=1,pos=0.5``: a finite, non-negative weight per named head (others: 1)."""
    names = [h.name for h in heads]
    weights = {name: 1.0 for name in names}
    for name, text in _pairs(value, "--task-weights") if value else []:
        if name not in weights:
            raise TagpipeError(f"--task-weights: {name!r} is no head (heads: {', '.join(names)})")
        try:
            weight = float(text)
        except ValueError:
            raise TagpipeError(f"--task-weights: {name}={text} is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise TagpipeError(f"--task-weights: {name}={text} must be a finite number >= 0")
        weights[name] = weight
    return weights


def apply_decoders(heads: Sequence[HeadSpec], default: str, value: str | Mapping[str, Any] | None,
                   aliases: Mapping[str, str]) -> None:
    """``--head-decoders pos=softmax``: a head's decoder (registry name or alias); others get ``default``."""
    by_name = {h.name: h for h in heads}
    for head in heads:
        head.decoder = default
    for name, decoder in _pairs(value, "--head-decoders") if value else []:
        if name not in by_name:
            raise TagpipeError(f"--head-decoders: {name!r} is no head (heads: {', '.join(by_name)})")
        by_name[name].decoder = aliases.get(decoder, decoder)


def apply_private_layers(heads: Sequence[HeadSpec], value: str | Mapping[str, Any] | None, *,
                         hidden: int, dropout: float) -> None:
    """``--private-layers ner=1``: that many BiLSTM layers (``hidden`` units per direction) of the head's
    own between the shared encoder and its decoder; the other heads read the shared encoder directly."""
    by_name = {h.name: h for h in heads}
    for name, text in _pairs(value, "--private-layers") if value else []:
        if name not in by_name:
            raise TagpipeError(f"--private-layers: {name!r} is no head (heads: {', '.join(by_name)})")
        if not text.isdigit() or not 0 <= int(text) <= 8:
            raise TagpipeError(f"--private-layers: {name}={text} must be a whole number of layers from 0 to 8")
        by_name[name].private = {"name": "tagpipe.bilstm.v1",
                                 "config": {"hidden": hidden, "layers": int(text), "dropout": dropout}} \
            if int(text) else None


def choose_main(heads: Sequence[HeadSpec], main: str | None) -> str:
    """``--main-task``: a head's name; the first column's head by default."""
    names = [h.name for h in heads]
    if main is None:
        return names[0]
    if main not in names:
        raise TagpipeError(f"--main-task {main!r} is no head (heads: {', '.join(names)})")
    return main


def looks_like_spans(tags: Sequence[str], prefixes: str) -> bool:
    """Whether every tag is ``O`` or ``P-TYPE`` with ``P`` one of ``prefixes`` (the file's scheme's)."""
    return all(t == "O" or (len(t) > 2 and t[1] == "-" and t[0] in prefixes) for t in tags)


def assign_targets(heads: Sequence[HeadSpec]) -> None:
    """Where the spaCy component writes each head: the span head named ``ner`` (else the first span
    head) sets ``doc.ents``, other span heads ``doc.spans[NAME]``; the first tag head sets ``token.tag_``
    (``token.pos_`` when it reads a ``upos`` field); further tag heads only ``Doc._.tagpipe_heads``."""
    spans = [h for h in heads if h.kind == "span"]
    ents = next((h for h in spans if h.name == "ner"), spans[0] if spans else None)
    tagged = False
    for head in heads:
        if head.kind == "span":
            head.target = "ents" if head is ents else "spans"
        elif not tagged:
            head.target = "pos" if head.column == "upos" else "tag"
            tagged = True
        else:
            head.target = "none"
