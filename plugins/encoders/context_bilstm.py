"""A BiLSTM over another encoder's features: ``tagpipe.bilstm.v1`` as a later stage of ``tagpipe.stack.v1``.

Also home of the LSTM pieces it shares with :class:`~tagpipe.plugins.encoders.bilstm.BiLSTMEncoder`
(initialisation, locked dropout), so the token BiLSTM imports this module and this module
imports neither it nor the stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import Tensor, nn

from tagpipe.components import Encoder
from tagpipe.errors import check_config_keys
from tagpipe.plugins.encoders.lstm_loop import run_bilstm


def init_lstm(lstm: nn.LSTM) -> None:
    """Xavier inputs, orthogonal recurrence, forget-gate bias 1 (remember by default)."""
    for name, param in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            for block in param.data.chunk(4, dim=0):
                nn.init.orthogonal_(block)
        elif name.startswith("bias"):
            nn.init.zeros_(param)
            if name.startswith("bias_ih"):  # PyTorch gate order: input, forget, cell, output
                param.data[lstm.hidden_size : 2 * lstm.hidden_size] = 1.0


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout of ``[B, T, D]`` with one mask per sentence, shared by all its tokens."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p) / (1 - p)  # shape: [B, 1, D]
    return x * mask


@dataclass
class ContextBiLSTMConfig:
    """A BiLSTM over another encoder's features (``tagpipe.bilstm.v1`` as a later stack stage)."""

    hidden: int = 200  # units per direction; output_dim = 2 * hidden
    layers: int = 1
    dropout: float = 0.25  # locked (one mask per sentence), on the output and between layers

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ContextBiLSTMConfig:
        check_config_keys("bilstm stack stage config", config, (f.name for f in fields(cls)))
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
        init_lstm(self.lstm)
        self.output_dim = 2 * cfg.hidden

    @classmethod
    def from_input(cls, input_dim: int, **config: Any) -> ContextBiLSTM:
        return cls(input_dim, ContextBiLSTMConfig.from_dict(config))

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def forward_features(self, inputs: Tensor, mask: Tensor) -> Tensor:
        out = run_bilstm(self.lstm, inputs.float(), mask.sum(1))  # shape: [B, T, 2H]
        return locked_dropout(out, self.cfg.dropout, self.training)
