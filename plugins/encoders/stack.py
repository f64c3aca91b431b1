"""Encoders in sequence (``tagpipe.stack.v1``): e.g. a transformer, then a BiLSTM over its output.

The first stage is an ordinary encoder (it featurizes the tokens); every later stage is built
by its class's ``from_input(input_dim, **config)`` and runs ``forward_features(x, mask)`` on the
previous stage's ``[B, T, D]`` output. Config::

    {"encoders": [{"name": "tagpipe.bert.v1", "config": {"pooling": "first"}},
                  {"name": "tagpipe.bilstm.v1", "config": {"hidden": 256}}]}

``pretrained`` given to the stack itself (``--pretrained PATH``) goes to the first stage.
Stage ``i`` keeps its assets in ``stage{i}/`` of the model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from tagpipe.components import Encoder, lengths_to_mask
from tagpipe.plugins.encoders.bilstm import _init_lstm, locked_dropout
from tagpipe.plugins.encoders.lstm_loop import run_bilstm
from torch import Tensor, nn


def _stages(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(registry name, config), ...]`` from a stack config, validated."""
    unknown = sorted(set(config) - {"encoders", "pretrained"})
    if unknown:
        raise ValueError(f"unknown stack config keys {unknown}; expected 'encoders' (and 'pretrained')")
    stages = config.get("encoders")
    if not isinstance(stages, list) or len(stages) < 2:
        raise ValueError("a stack needs 'encoders': a list of at least two {'name': ..., 'config': {...}}")
    out = []
    for stage in stages:
        if not isinstance(stage, dict) or "name" not in stage:
            raise ValueError(f"stack stage {stage!r}: expected {{'name': ..., 'config': {{...}}}}")
        out.append((str(stage["name"]), dict(stage.get("config") or {})))
    return out


class StackEncoder(Encoder):
    """Stage 0 featurizes and encodes tokens; stages 1.. re-encode: ``[B, T, last.output_dim]``."""

    def __init__(self, names: Sequence[str], stages: Sequence[Encoder]) -> None:
        super().__init__()
        self.names = list(names)
        self.stages = nn.ModuleList(stages)
        self.output_dim = stages[-1].output_dim

    @classmethod
    def _build(cls, config: dict[str, Any], first) -> StackEncoder:
        from tagpipe.host import get_registry

        registry = get_registry()
        specs = _stages(config)
        stages = [first(registry.get("encoder", specs[0][0]), specs[0][1])]
        for name, stage_config in specs[1:]:
            stages.append(registry.get("encoder", name).from_input(stages[-1].output_dim, **stage_config))
        return cls([n for n, _ in specs], stages)

    @classmethod
    def from_corpus(cls, sentences: Sequence[Sequence[str]], **config: Any) -> StackEncoder:
        pretrained = config.get("pretrained")

        def first(encoder_cls, stage_config):
            if pretrained and "pretrained" not in stage_config:
                stage_config = {**stage_config, "pretrained": pretrained}
            return encoder_cls.from_corpus(sentences, **stage_config)

        return cls._build(config, first)

    @classmethod
    def from_assets(cls, path: Path, config: dict[str, Any]) -> StackEncoder:
        return cls._build(config, lambda encoder_cls, stage_config: encoder_cls.from_assets(
            Path(path) / "stage0", stage_config))

    def config(self) -> dict[str, Any]:
        return {"encoders": [{"name": n, "config": s.config()} for n, s in zip(self.names, self.stages, strict=True)]}

    def save_assets(self, path: Path) -> None:
        for i, stage in enumerate(self.stages):
            stage.save_assets(Path(path) / f"stage{i}")

    def parameter_groups(self, lr: float, pretrained_lr: float | None = None) -> list[dict[str, Any]]:
        return [g for stage in self.stages for g in stage.parameter_groups(lr, pretrained_lr)]

    def enable_grad_checkpointing(self) -> bool:
        return any([stage.enable_grad_checkpointing() for stage in self.stages])

    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        features = self.stages[0].featurize(sentences)
        features["stack_lengths"] = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return features

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        lengths = features["stack_lengths"]
        x = self.stages[0]({k: v for k, v in features.items() if k != "stack_lengths"})  # shape: [B, T, D0]
        mask = lengths_to_mask(lengths.to(x.device), x.shape[1])  # shape: [B, T]
        for stage in self.stages[1:]:
            x = stage.forward_features(x, mask)
        return x


@dataclass
class ContextBiLSTMConfig:
    """A BiLSTM over another encoder's features (``tagpipe.bilstm.v1`` as a later stack stage)."""

    hidden: int = 200  # units per direction; output_dim = 2 * hidden
    layers: int = 1
    dropout: float = 0.25  # locked (one mask per sentence), on the output and between layers

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ContextBiLSTMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"a bilstm stack stage takes {sorted(known)}, not {unknown}")
        cfg = cls(**config)
        if cfg.hidden < 1 or cfg.layers < 1 or not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"bad bilstm stage config {asdict(cfg)}")
        return cfg


class ContextBiLSTM(Encoder):
    """``[B, T, input_dim]`` features -> BiLSTM -> locked dropout -> ``[B, T, 2 * hidden]``."""

    def __init__(self, input_dim: int, cfg: ContextBiLSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(input_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        _init_lstm(self.lstm)
        self.output_dim = 2 * cfg.hidden

    @classmethod
    def from_input(cls, input_dim: int, **config: Any) -> ContextBiLSTM:
        return cls(input_dim, ContextBiLSTMConfig.from_dict(config))

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def forward_features(self, inputs: Tensor, mask: Tensor) -> Tensor:
        out = run_bilstm(self.lstm, inputs.float(), mask.sum(1))  # shape: [B, T, 2H]
        return locked_dropout(out, self.cfg.dropout, self.training)
