"""A BiLSTM encoder over word, character and casing features (``tagpipe.bilstm.v1``).

Designed to do well without pretrained vectors (see :mod:`~tagpipe.plugins.encoders.word_features`
for the features), and better with them: ``pretrained_vectors`` names a GloVe/word2vec text file
or a spaCy vectors folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tagpipe.components import Encoder, lengths_to_mask
from tagpipe.model_folder import Field
from tagpipe.plugins.encoders.context_bilstm import ContextBiLSTM, init_lstm
from tagpipe.plugins.encoders.lstm_loop import run_bilstm, run_bilstm_rows, uses_step_loop
from tagpipe.plugins.encoders.word_features import FeatureConfig, WordFeatureEncoder


@dataclass
class BiLSTMConfig(FeatureConfig):
    """The token features' hyper-parameters, and the BiLSTM's."""

    kind: ClassVar[str] = "bilstm"
    extra_fields: ClassVar[dict[str, Field]] = {
        "hidden": Field((int,), low=1, high=16_384),
        "layers": Field((int,), low=1, high=64),
    }

    hidden: int = 200  # LSTM units per direction
    layers: int = 1


class BiLSTMEncoder(WordFeatureEncoder):
    """Word + char + casing embeddings -> dropout -> BiLSTM -> dropout: ``[B, T, 2 * hidden]``."""

    config_class = BiLSTMConfig
    cfg: BiLSTMConfig

    def __init__(self, cfg: BiLSTMConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.lstm = nn.LSTM(
            self.input_dim,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        init_lstm(self.lstm)
        self.output_dim = 2 * cfg.hidden

    @classmethod
    def from_input(cls, input_dim: int, **config: Any) -> Encoder:
        """As a later stage of ``tagpipe.stack.v1``: a BiLSTM over the previous stage's features."""
        return ContextBiLSTM.from_input(input_dim, **config)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, T, 2 * hidden]``; rows are zero past each sentence's length."""
        word_ids, lengths = features["word_ids"], features["lengths"]
        batch, seq = word_ids.shape
        if batch == 0 or seq == 0:
            return self.word_embed.weight.new_zeros(batch, seq, self.output_dim)
        if self.bigram_embed is None and not self.training and uses_step_loop(self.lstm, self.word_embed.weight):
            return self._forward_distinct(features, lengths_to_mask(lengths.to(word_ids.device), seq))
        out = run_bilstm(self.lstm, self.embed(features), lengths)  # shape: [B, T, 2 * hidden]
        return self._dropout(out)

    def _forward_distinct(self, features: dict[str, Tensor], mask: Tensor) -> Tensor:
        """CPU inference (fp32, or bf16 autocast) with each distinct token's input built and projected once.

        A token's word id, casing and characters all follow from its string, and ``char_index``
        already numbers the batch's distinct strings: their ``U`` input rows go to
        :func:`run_bilstm_rows` with ``char_index`` saying which row each token reads. Same result
        as :meth:`forward`'s per-token path (a test compares them).
        """
        index, chars = features["char_index"], features["char_ids"]  # shapes: [B, T], [U, L]
        rows, distinct = index[mask], len(chars)  # only real tokens
        word_ids = features["word_ids"].new_zeros(distinct).index_copy_(0, rows, features["word_ids"][mask])
        casings = features["casing"].new_zeros(distinct).index_copy_(0, rows, features["casing"][mask])
        encoded = self.char_encoder(chars).to(self.word_embed.weight.dtype)  # shape: [U, char features]
        x = torch.cat([self.word_embed(word_ids), encoded, self.casing_embed(casings)], dim=1)  # shape: [U, D]
        return run_bilstm_rows(self.lstm, x, index, features["lengths"])  # shape: [B, T, 2 * hidden]
