"""Training settings: one dataclass shared by the CLI, config files and the Python API."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from tagpipe.errors import TagpipeError, check_config_keys

ENCODER_ALIASES = {"bilstm": "tagpipe.bilstm.v1", "bert": "tagpipe.bert.v1"}
DECODER_ALIASES = {
    "softmax": "tagpipe.softmax.v1",
    "crf": "tagpipe.crf.v1",
    "memm": "tagpipe.memm.v1",
    "bimemm": "tagpipe.bimemm.v1",
}

OPTIMIZERS = ("adamw", "adafactor", "sgd")
OPTIMIZER_ALIASES = {"adam": "adamw"}


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
    encoder_config: dict[str, Any] = field(default_factory=dict)
    decoder_config: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None  # a local HF model folder: sets encoder_config["pretrained"]
    epochs: int = 30
    batch_size: int = 32  # sentences per forward pass; a step sees batch_size * accumulate (global under torchrun)
    accumulate: int = 1  # gradient accumulation: forward/backward passes per optimizer step
    lr: float = 2e-3
    encoder_lr: float | None = None  # pretrained encoder weights (a transformer); None: --lr
    optimizer: str = "adamw"  # adamw (alias adam), adafactor or sgd
    weight_decay: float = 0.0
    warmup: float = 0.02  # fraction of all steps spent warming the learning rate up
    lr_final: float = 0.1  # learning rate at the end, as a fraction of --lr (linear decay)
    clip: float = 5.0
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

    def __post_init__(self) -> None:
        self.encoder = ENCODER_ALIASES.get(self.encoder, self.encoder)
        self.decoder = DECODER_ALIASES.get(self.decoder, self.decoder)
        if self.epochs < 1 or self.batch_size < 1:
            raise TagpipeError("--epochs and --batch-size must be at least 1")
        if self.precision not in {"fp32", "bf16", "fp16"}:
            raise TagpipeError(f"--precision must be fp32, bf16 or fp16, not {self.precision!r}")
        self.optimizer = OPTIMIZER_ALIASES.get(self.optimizer, self.optimizer)
        if self.optimizer not in OPTIMIZERS:
            raise TagpipeError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (or adam), not {self.optimizer!r}")
        if self.accumulate < 1:
            raise TagpipeError("--accumulate must be at least 1")
        if self.invalid_tags not in {"repair", "drop"}:
            raise TagpipeError(f"--invalid-tags must be repair or drop, not {self.invalid_tags!r}")
        if self.pretrained:
            self.encoder_config = {**self.encoder_config, "pretrained": self.pretrained}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        check_config_keys("training setting", values, (f.name for f in fields(cls)))
        return cls(**values)


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
