"""Training settings: one dataclass shared by the CLI, config files and the Python API."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError, TagpipeError, check_config_keys
from tagpipe.training.optimizers import LR_SCALING_RULES, OPTIMIZER_ALIASES, default_lr_scaling, optimizer_name

ENCODER_ALIASES = {"bilstm": "tagpipe.bilstm.v1", "bert": "tagpipe.bert.v1", "idcnn": "tagpipe.idcnn.v1",
                   "transformer": "tagpipe.transformer.v1"}
DECODER_ALIASES = {
    "softmax": "tagpipe.softmax.v1",
    "crf": "tagpipe.crf.v1",
    "memm": "tagpipe.memm.v1",
    "bimemm": "tagpipe.bimemm.v1",
}


#: a field's metadata: a ``--config`` key that ``train`` has no flag for (messages name it by its key)
CONFIG_KEY = {"flag": False}
#: settings that decide how long a run goes on or how it writes, not what it trained: ``--resume`` may
#: accept a change to these when ``allow_change`` names them (by default ``epochs`` and ``patience``)
MAY_CHANGE_ON_RESUME = ("epochs", "patience", "average", "save_dtype", "max_sentence_length", "compile",
                        "grad_checkpointing")
#: where and how fast a run goes: never compared on ``--resume``
RUN_PLACE = ("output", "device", "threads")
#: what ``check_values`` checks: (whole number, lowest value, lowest value allowed itself, None allowed)
_LIMITS: dict[str, tuple[bool, float, bool, bool]] = {
    "epochs": (True, 1, True, False), "batch_size": (True, 1, True, False), "accumulate": (True, 1, True, False),
    "max_sentence_length": (True, 1, True, False), "patience": (True, 0, True, False),
    "average": (True, 0, True, False), "threads": (True, 1, True, True), "seed": (True, -math.inf, True, False),
    "lr": (False, 0, False, False), "encoder_lr": (False, 0, False, True), "weight_decay": (False, 0, True, False),
    "warmup": (False, 0, True, False), "lr_final": (False, 0, True, False), "clip": (False, 0, True, False),
    "flood": (False, 0, True, False), "reference_batch_size": (True, 1, True, True),
}


@dataclass
class TrainSettings:
    """Everything a training run depends on. Saved with the model and with checkpoints."""

    train: str = ""
    dev: str | None = None
    output: str = "models/tagger"
    format: str = "conll"
    task: str = "ner"
    scheme: str = "iob2"  # the tagging scheme of the input files (NER)
    tag_column: int | str | None = None  # default: the format's own (last CoNLL column, UPOS)
    lang: str = "en"
    encoder: str = "bilstm"
    decoder: str = "crf"
    encoder_config: dict[str, Any] = field(default_factory=dict, metadata=CONFIG_KEY)
    decoder_config: dict[str, Any] = field(default_factory=dict, metadata=CONFIG_KEY)
    pretrained: str | None = None  # a local HF model folder: sets encoder_config["pretrained"]
    vectors: str | None = None  # word vectors (GloVe/word2vec text, spaCy folder): encoder_config pretrained_vectors
    epochs: int = 30
    batch_size: int = 32  # sentences per forward pass; a step sees batch_size * accumulate (global under torchrun)
    accumulate: int = 1  # gradient accumulation: forward/backward passes per optimizer step
    lr: float = 2e-3
    encoder_lr: float | None = None  # pretrained encoder weights (a transformer); None: --lr
    optimizer: str = "adamw"  # a registered optimizer or an alias (adamw, adam, adafactor, sgd, adax); saved by name
    lr_scaling: str | None = None  # sqrt, linear or none (lr_scaling.py); None: the optimizer's own default
    reference_batch_size: int | None = None  # the global batch --lr was tuned for; None: --batch-size
    flood: float = 0.0  # train on |L - flood| + flood (flooding.py); 0: off
    weight_decay: float = field(default=0.0, metadata=CONFIG_KEY)
    warmup: float = field(default=0.02, metadata=CONFIG_KEY)  # fraction of all steps spent warming the lr up
    lr_final: float = field(default=0.1, metadata=CONFIG_KEY)  # final lr, as a fraction of --lr (linear decay)
    clip: float = field(default=5.0, metadata=CONFIG_KEY)
    patience: int = 8
    average: int = 0  # average the weights of the K best dev checkpoints at the end
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    precision: str = "fp32"
    grad_checkpointing: bool = False  # recompute the encoder's activations in backward (less memory)
    compile: bool = False  # torch.compile the encoder
    invalid_tags: str = "repair"  # sentences whose gold tags break --scheme: repair or drop (NER)
    save_dtype: str = "float32"
    max_sentence_length: int = 1000  # a longer training or dev sentence is refused (file:line), not trained on
    #: ``--resume`` only: settings of MAY_CHANGE_ON_RESUME that may differ from the checkpoint's. Not a
    #: training setting: left out of ``to_dict()`` (the model's ``meta.settings``, the checkpoint's manifest)
    allow_change: tuple[str, ...] | str = ("epochs", "patience")

    def __post_init__(self) -> None:
        self.encoder = ENCODER_ALIASES.get(self.encoder, self.encoder)
        self.decoder = DECODER_ALIASES.get(self.decoder, self.decoder)
        check_values(asdict(self))
        self.allow_change = parse_allow_change(self.allow_change)
        if self.precision not in {"fp32", "bf16", "fp16"}:
            raise TagpipeError(f"--precision must be fp32, bf16 or fp16, not {self.precision!r}")
        self.optimizer = optimizer_name(self.optimizer)
        if self.lr_scaling is None:  # resolved here, so saved settings and --resume see the rule used
            self.lr_scaling = default_lr_scaling(self.optimizer)
        if self.lr_scaling not in LR_SCALING_RULES:
            raise TagpipeError(f"--lr-scaling must be {', '.join(LR_SCALING_RULES)}, not {self.lr_scaling!r}")
        if self.reference_batch_size is None:
            self.reference_batch_size = self.batch_size
        if self.invalid_tags not in {"repair", "drop"}:
            raise TagpipeError(f"--invalid-tags must be repair or drop, not {self.invalid_tags!r}")
        if self.pretrained:
            self.encoder_config = {**self.encoder_config, "pretrained": self.pretrained}
        if self.vectors:
            self.encoder_config = {**self.encoder_config, "pretrained_vectors": self.vectors}

    def to_dict(self) -> dict[str, Any]:
        """The training settings (``allow_change``, a resume option, left out)."""
        values = asdict(self)
        del values["allow_change"]
        return values

    def check_output(self) -> None:
        """:func:`check_output` for this run's ``--output`` and corpora, and that ``--vectors`` is there."""
        check_output(self.output, {"--train": self.train, "--dev": self.dev})
        vectors = self.encoder_config.get("pretrained_vectors")
        if vectors:
            check_vectors_path(str(vectors))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        check_config_keys("training setting", values, (f.name for f in fields(cls)))
        return cls(**values)


def upgrade_saved(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings saved by an older tagpipe as this one saves them: optimizers by registry name, and the
    settings added since at the values that train as those runs did (no flooding; a reference batch equal
    to the global batch, so no lr scaling: resuming one with --accumulate > 1 must say so)."""
    values = dict(values)
    if isinstance(values.get("optimizer"), str):
        values["optimizer"] = OPTIMIZER_ALIASES.get(values["optimizer"], values["optimizer"])
    values.setdefault("flood", 0.0)
    if "reference_batch_size" not in values and isinstance(values.get("batch_size"), int):
        values["reference_batch_size"] = values["batch_size"] * values.get("accumulate", 1)
    if "lr_scaling" not in values:
        try:
            values["lr_scaling"] = default_lr_scaling(values.get("optimizer", OPTIMIZER_ALIASES["adamw"]))
        except TagpipeError:  # an optimizer no longer registered: the comparison names it anyway
            values["lr_scaling"] = None
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file of training settings (keys as the CLI options, ``-`` or ``_``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TagpipeError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TagpipeError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(values, dict):
        raise TagpipeError(f"{path}: expected an object of settings")
    return {key.replace("-", "_"): value for key, value in values.items()}


def option_name(key: str) -> str:
    """How messages name a setting: ``--batch-size``, or the ``--config`` key of one without a flag."""
    spec = {f.name: f for f in fields(TrainSettings)}.get(key)
    if spec is not None and spec.metadata.get("flag") is False:
        return key
    return "--" + key.replace("_", "-")


def check_values(values: Mapping[str, Any]) -> None:
    """Refuse a numeric setting no run can use (``--lr nan``, ``--threads 0``, ``--epochs 0``, ...) in one line
    naming the option. Only the keys present are checked; ``TrainSettings`` checks its own on construction and
    ``tagpipe train`` the command's options before any file is read."""
    for key, (whole, low, inclusive, optional) in _LIMITS.items():
        if key not in values or (optional and values[key] is None):
            continue
        value = values[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (whole and not isinstance(value, int)):
            raise TagpipeError(f"{option_name(key)} {value!r}: expected {'a whole number' if whole else 'a number'}")
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = f"at least {low:g}" if inclusive else f"above {low:g}"
            raise TagpipeError(f"{option_name(key)} {value}: must be {'' if whole else 'a finite number '}{bound}")


def check_lengths(sentences: Sequence[Sentence], limit: int, path: str | Path) -> None:
    """Refuse a corpus with a sentence of more than ``limit`` tokens (``--max-sentence-length``), naming the
    file and line of the first one: one such sentence used to cost minutes and gigabytes before any batch."""
    too_long = [i for i, x in enumerate(sentences) if len(x) > limit]
    if not too_long:
        return
    first = sentences[too_long[0]]
    more = f" ({len(too_long)} sentences are)" if len(too_long) > 1 else ""
    reason = (f"a sentence of {len(first):,} tokens, longer than --max-sentence-length {limit}{more}: split it, "
              "or raise the limit")
    if first.line is None:
        raise TagpipeError(f"{path}: sentence {too_long[0] + 1}: {reason}")
    raise CorpusError(first.source or str(path), first.line, reason)


def parse_allow_change(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``--allow-change epochs,patience`` (or a list in a config file) as setting names; ``none`` is none."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    keys = tuple(dict.fromkeys(str(n).strip().replace("-", "_") for n in names if str(n).strip()))
    keys = tuple(k for k in keys if k != "none")
    wrong = [k for k in keys if k not in MAY_CHANGE_ON_RESUME]
    if wrong:
        wrong, allowed = (", ".join(k.replace("_", "-") for k in keys) for keys in (wrong, MAY_CHANGE_ON_RESUME))
        raise TagpipeError(f"--allow-change {wrong}: only {allowed} may change on --resume (the others decide "
                           "what the checkpoint's model and optimizer already are)")
    return keys


def check_vectors_path(path: str) -> None:
    """Refuse word vectors that cannot be read, before any data is read: a missing path, an empty or
    unreadable file, a folder (spaCy's layout is checked when the encoder reads it)."""
    vectors = Path(path).expanduser()
    if not vectors.exists():
        raise TagpipeError(f"--vectors {path}: no such file or folder")
    if vectors.is_dir():
        return
    try:
        with open(vectors, "rb") as f:
            if not f.read(1):
                raise TagpipeError(f"--vectors {path}: the file is empty")
    except OSError as exc:
        raise TagpipeError(f"--vectors {path}: cannot read it ({exc.strerror or exc})") from None


def check_output(output: str | Path, inputs: Mapping[str, str | None] | None = None) -> None:
    """Refuse an ``--output`` that training could not write, before any data is read or model built: an existing
    file (an input file above all), a path inside an input file, a folder this process cannot create files in.
    ``inputs`` maps an option (``--train``) to its path. Nothing is created."""
    out = Path(output).absolute()
    inputs = inputs or {}
    files = {flag: Path(p).absolute() for flag, p in inputs.items() if p and str(p) != "-" and Path(p).is_file()}
    if out.exists() and not out.is_dir():
        flag = next((f for f, p in files.items() if _same_file(p, out)), None)
        raise TagpipeError(f"--output {output}: " + (f"is the {flag} file" if flag else "a file, not a model folder"))
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        flag = next((f for f, p in files.items() if _same_file(p, existing)), None)
        where = f"the {flag} file {inputs[flag]}" if flag else f"the file {existing}"
        raise TagpipeError(f"--output {output}: inside {where}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".tagpipe-write-check-")
    except OSError as exc:
        raise TagpipeError(f"--output {output}: cannot create files in {existing} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
