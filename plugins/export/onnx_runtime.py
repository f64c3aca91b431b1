"""Tagging with an exported BiLSTM tagger through onnxruntime: no torch needed (``pip install tagpipe[onnx]``).

``tagpipe export MODEL --to onnx OUT`` writes ``OUT/model.onnx`` (the encoder and the decoder's per-token
scores), ``OUT/vocab.json`` (the encoder's vocabularies) and ``OUT/config.json`` (labels, featurizer
settings, and what the decoder adds: transition scores, or plain argmax)::

    from tagpipe.plugins.export.onnx_runtime import OnnxTagger

    tagger = OnnxTagger.load("OUT", threads=1)
    tagger.tag([["Angela", "Merkel", "visited", "Paris", "."]])  # [['B-PER', 'E-PER', 'O', 'S-LOC', 'O']]

The tags are those ``Tagger.load(MODEL).tag(...)`` gives (the model's own tag set: BIOES for NER;
``tagpipe.corpora.schemes.tags_to_spans(tags, "bioes")`` gives the entities). This module imports only
numpy, onnxruntime and tagpipe's torch-free modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tagpipe.errors import ModelError
from tagpipe.names import CONFIG_FILE
from tagpipe.plugins.export.chains import argmax, from_json, viterbi
from tagpipe.plugins.export.featurize import Featurizer

#: what ``config.json`` of an exported ONNX folder says it is
ONNX_FORMAT = "tagpipe.onnx"
ONNX_FORMAT_VERSION = 1
GRAPH_FILE = "model.onnx"
VOCABULARY_FILE = "vocab.json"  # the BiLSTM encoder's vocab.json, copied


class OnnxTagger:
    """An exported tagger: featurize in Python, score in onnxruntime, decode in numpy."""

    def __init__(self, session: Any, featurizer: Featurizer, config: dict[str, Any]) -> None:
        self.session = session
        self.featurizer = featurizer
        self.config = config
        self.labels: list[str] = list(config["labels"])
        self.inputs: list[str] = list(config["inputs"])
        self.outputs: list[str] = list(config["outputs"])
        decoding = config["decoding"]
        self.method: str = decoding["method"]
        if self.method == "viterbi":
            self.transitions = from_json(decoding["transitions"])  # shape: [C, C]
            self.start, self.end = from_json(decoding["start"]), from_json(decoding["end"])  # shape: [C] each

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> OnnxTagger:
        """The tagger exported to ``path``; ``threads`` sets onnxruntime's intra-op threads (its default: all)."""
        import onnxruntime

        folder = Path(path)
        config = _read_json(folder / CONFIG_FILE, "the export's settings")
        if config.get("format") != ONNX_FORMAT or config.get("format_version") != ONNX_FORMAT_VERSION:
            raise ModelError(f"{folder / CONFIG_FILE}: not a tagpipe ONNX export (format {ONNX_FORMAT!r} "
                             f"version {ONNX_FORMAT_VERSION}); write one with `tagpipe export MODEL --to onnx OUT`")
        vocab = _read_json(folder / VOCABULARY_FILE, "the encoder's vocabularies")
        if not (folder / GRAPH_FILE).is_file():
            raise ModelError(f"{folder}: missing {GRAPH_FILE}")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ModelError(f"threads must be at least 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(folder / GRAPH_FILE), options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"{folder / GRAPH_FILE}: onnxruntime cannot load it ({' '.join(str(exc).split())})") \
                from None
        return cls(session, Featurizer(vocab, config["featurizer"]), config)

    def scores(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The graph's outputs for a batch of non-empty sentences: ``scores`` ``[B, T, C]`` (and an MEMM's
        per-step ``transitions`` ``[B, T, C, C]``)."""
        features = self.featurizer(sentences)
        values = self.session.run(self.outputs, {name: features[name] for name in self.inputs})
        return dict(zip(self.outputs, values, strict=True))

    def tag_ids(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """Best tag ids ``[B, T]`` (``-1`` at padding) for a batch of non-empty sentences."""
        out = self.scores(sentences)
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        if self.method == "argmax":
            return argmax(out["scores"], lengths)
        transitions = self.transitions
        if "transitions" in out:  # an MEMM: per-step scores plus the scheme's forbidden transitions
            transitions = out["transitions"] + transitions
        return viterbi(out["scores"], lengths, transitions, self.start, self.end)

    def tag(self, sentences: Sequence[Sequence[str]], *, batch_size: int = 64) -> list[list[str]]:
        """Tag strings for each pre-split sentence, batched by length as ``Tagger.tag`` batches them."""
        results: list[list[str]] = [[] for _ in sentences]
        order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            ids = self.tag_ids([sentences[i] for i in chunk])
            for row, i in enumerate(chunk):
                results[i] = [self.labels[t] for t in ids[row, : len(sentences[i])]]
        return results


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read it ({' '.join(str(exc).split())})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object ({what})")
    return value
