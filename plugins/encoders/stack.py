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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.components import Encoder, lengths_to_mask
from tagpipe.errors import check_config_keys


def _stages(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(registry name, config), ...]`` from a stack config, validated."""
    check_config_keys("stack encoder config", config, ("encoders", "pretrained"))
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

