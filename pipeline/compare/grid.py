"""What one ``tagpipe compare`` run trains: encoders x decoders x seeds, each cell a model folder.

Cell ``(encoder, decoder, seed)`` trains into ``OUTPUT/runs/<encoder>-<decoder>-seed<k>/`` and,
once finished, holds ``result.json`` there. Running a grid is :mod:`tagpipe.compare.run`; its
report, :mod:`tagpipe.compare.report`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpipe.errors import TagpipeError
from tagpipe.training.settings import DECODER_ALIASES, ENCODER_ALIASES, TrainSettings

RUNS_DIR = "runs"
RESULT_FILE = "result.json"
RESULT_VERSION = 1
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")  # a label names folders: no '/', no spaces


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder of the grid: its label (in folder names and the table), registry name and pretrained folder."""

    label: str
    name: str
    pretrained: str | None = None


def parse_encoder(spec: str) -> EncoderSpec:
    """``[LABEL=]ENCODER[:PRETRAINED]``: ``bilstm``, ``bert:models/minilm``, ``minilm=bert:models/minilm``.

    ENCODER is a registry name or an alias (``bilstm``, ``bert``); the label defaults to the alias."""
    label, name = "", spec.strip()
    head = name.split(":", 1)[0]
    if "=" in head:  # an '=' inside the path is not a label
        label, name = name.split("=", 1)
    name, _, pretrained = name.partition(":")
    name = ENCODER_ALIASES.get(name, name)
    label = label or short_name(name, ENCODER_ALIASES)
    if not name or not LABEL.match(label):
        raise TagpipeError(f"--encoder {spec!r}: expected [LABEL=]ENCODER[:PRETRAINED] with a LABEL of letters, "
                           "digits, '.', '_', '+' or '-'")
    return EncoderSpec(label, name, pretrained or None)


def short_name(name: str, aliases: dict[str, str]) -> str:
    """``tagpipe.crf.v1`` -> ``crf``: the alias of a registry name, or the name itself."""
    return next((alias for alias, full in aliases.items() if full == name), name)


@dataclass(frozen=True)
class Cell:
    encoder: EncoderSpec
    decoder: str  # registry name
    seed: int

    @property
    def decoder_label(self) -> str:
        return short_name(self.decoder, DECODER_ALIASES)

    @property
    def name(self) -> str:
        return f"{self.encoder.label}-{self.decoder_label}-seed{self.seed}"


@dataclass
class Grid:
    """What one ``tagpipe compare`` run trains: every encoder x decoder x seed with ``base`` settings."""

    encoders: list[EncoderSpec]
    decoders: list[str]  # registry names or aliases
    seeds: list[int]
    test: str
    output: Path
    base: dict[str, Any] = field(default_factory=dict)  # TrainSettings values but encoder, decoder, seed, output
    force: bool = False
    decode_batch_size: int = 128
    command: str = ""

    def cells(self) -> list[Cell]:
        decoders = list(dict.fromkeys(DECODER_ALIASES.get(d, d) for d in self.decoders))
        return [Cell(e, d, s) for e in self.encoders for d in decoders for s in self.seeds]

    def settings(self, cell: Cell) -> TrainSettings:
        values = {**self.base, "encoder": cell.encoder.name, "decoder": cell.decoder, "seed": cell.seed,
                  "output": str(self.output / RUNS_DIR / cell.name)}
        if cell.encoder.pretrained:
            values["pretrained"] = cell.encoder.pretrained
        return TrainSettings.from_dict(values)
