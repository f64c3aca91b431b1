"""``tagpipe export MODEL --to onnx OUT``: a BiLSTM tagger's scores as an ONNX graph, for onnxruntime.

The graph takes the encoder's featurized id tensors (``word_ids``, ``casing``, ``char_ids``,
``char_index``, ``lengths`` and, with bigrams, ``bigram_ids``; :mod:`~tagpipe.plugins.export.featurize`
makes them without torch) and returns the decoder's per-token ``scores`` ``[B, T, C]``: the softmax's
log-probabilities, the CRF's emissions, or an MEMM's chain potentials (with per-step ``transitions``
``[B, T, C, C]``). What the decoder adds (transition scores, the scheme's forbidden transitions) goes to
``config.json``, and :mod:`~tagpipe.plugins.export.onnx_runtime` decodes in numpy.

The encoder is rebuilt here from its own submodules in a form the exporter can trace: the character
CNN over padded words (the encoder lays words end to end), and the BiLSTM as two one-direction LSTMs,
the backward one over each sentence reversed within its length (the encoder packs sequences or runs a
step loop). Exporting runs both on sample sentences and refuses the graph unless its scores equal the
model's, and onnxruntime's equal torch's on sentences of other shapes. Exporter: torch's TorchScript
one (``torch.onnx.export(..., dynamo=False)``), which needs no onnxscript.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagpipe.model import Tagger
from tagpipe.names import CONFIG_FILE
from tagpipe.plugins.export.chains import to_json
from tagpipe.plugins.export.checks import ExportError, check_source, staged_folder
from tagpipe.plugins.export.onnx_runtime import (
    GRAPH_FILE,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    VOCABULARY_FILE,
)

#: the special ids of the BiLSTM's vocabularies (``token_features``: PAD, UNK, BOW, EOW)
SPECIAL_IDS = {"pad": 0, "unk": 1, "bow": 2, "eow": 3}
DEFAULT_OPSET = 17
SCORE_TOLERANCE = 1e-4  # largest difference of scores allowed between the model, the graph and onnxruntime


def export_onnx(model: Path, out: Path, *, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write ``out`` (model.onnx, vocab.json, config.json) for the BiLSTM tagger in ``model``; a summary."""
    check_source(model, "onnx")
    try:  # torch's exporter writes through onnx; the check runs onnxruntime
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"--to onnx needs the {exc.name} package: pip install 'tagpipe[onnx]'") from None
    tagger = Tagger.load(model).eval()
    graph = BiLSTMScores(tagger).eval()
    traced = tagger.featurize(probe_sentences(tagger.encoder.words, (7, 3, 1)))
    args = tuple(traced[name] for name in graph.input_names)
    with torch.no_grad():
        _compare("the rebuilt graph", graph(*args), reference_scores(tagger, traced), traced["lengths"])
    with staged_folder(out) as staging:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on nn.LSTM internals; the checks below decide
                torch.onnx.export(graph, args, str(staging / GRAPH_FILE), dynamo=False, opset_version=opset,
                                  input_names=graph.input_names, output_names=graph.output_names,
                                  dynamic_axes=graph.dynamic_axes())
        except Exception as exc:  # noqa: BLE001 - the exporter's errors have many types
            message = " ".join(str(exc).split())[:300]
            raise ExportError(f"torch.onnx cannot export {model} at opset {opset} ({type(exc).__name__}: {message}); "
                              "nothing was written") from None
        check_runtime(staging / GRAPH_FILE, graph, tagger)
        shutil.copyfile(model / VOCABULARY_FILE, staging / VOCABULARY_FILE)
        settings = runtime_config(tagger, graph)
        (staging / CONFIG_FILE).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return {"target": "onnx", "out": str(out), "inputs": graph.input_names, "outputs": graph.output_names,
            "decoding": settings["decoding"]["method"], "opset": opset}


# -- the graph ---------------------------------------------------------------------------------------
class BiLSTMScores(nn.Module):
    """The BiLSTM encoder and the decoder's per-token scores, in traceable form (see the module doc)."""

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        encoder, decoder = tagger.encoder, tagger.decoder
        self.decoder_name = tagger.decoder_name
        self.word_embed, self.casing_embed = encoder.word_embed, encoder.casing_embed
        self.bigram_embed = encoder.bigram_embed
        self.chars = CharFeatures(encoder.char_encoder, encoder.cfg.char_encoder)
        self.lstm = PaddedBiLSTM(encoder.lstm)
        self.decoder = decoder
        self.input_names = ["word_ids", "casing", "char_ids", "char_index", "lengths"]
        if self.bigram_embed is not None:
            self.input_names.append("bigram_ids")
        memm = self.decoder_name in ("tagpipe.memm.v1", "tagpipe.bimemm.v1")
        self.output_names = ["scores", "transitions"] if memm else ["scores"]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        tokens = {0: "batch", 1: "tokens"}
        axes = {name: tokens for name in ("word_ids", "casing", "char_index", "bigram_ids", *self.output_names)}
        axes.update(char_ids={0: "distinct", 1: "chars"}, lengths={0: "batch"})
        return {name: axes[name] for name in (*self.input_names, *self.output_names)}

    def forward(self, word_ids: Tensor, casing: Tensor, char_ids: Tensor, char_index: Tensor, lengths: Tensor,
                bigram_ids: Tensor | None = None) -> tuple[Tensor, ...]:
        positions = torch.cumsum(torch.ones_like(word_ids), 1) - 1  # shape: [B, T]
        mask = positions < lengths[:, None]  # shape: [B, T]
        chars = self.chars(char_ids)[char_index] * mask[:, :, None]  # shape: [B, T, char features]
        parts = [self.word_embed(word_ids), chars, self.casing_embed(casing)]
        if self.bigram_embed is not None:
            parts.append(self.bigram_embed(bigram_ids))
        hidden = self.lstm(torch.cat(parts, dim=2), lengths, positions)  # shape: [B, T, 2 * hidden]
        return decoder_scores(self.decoder_name, self.decoder, hidden, mask)


def decoder_scores(name: str, decoder: nn.Module, hidden: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
    """What the decoder decodes from: softmax log-probabilities, CRF emissions, or an MEMM's chain
    potentials ``(unary [B, T, C], transitions [B, T, C, C])``."""
    if name == "tagpipe.softmax.v1":
        return (F.log_softmax(decoder.projection(hidden).float(), dim=-1),)
    if name == "tagpipe.crf.v1":
        return (decoder.projection(hidden),)
    return tuple(decoder._potentials(hidden, mask))  # the MEMMs' own potentials, so both decode the same chain


def reverse_within(x: Tensor, lengths: Tensor, positions: Tensor) -> Tensor:
    """Each row of ``x`` ``[B, T, D]`` reversed within its length (padding stays where it is)."""
    back = lengths[:, None] - 1 - positions  # shape: [B, T]
    index = torch.where(back >= 0, back, positions)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def one_direction(lstm: nn.LSTM, layer: int, suffix: str) -> nn.LSTM:
    """Layer ``layer`` of a bidirectional ``lstm`` in one direction (``suffix`` "" or "_reverse") as its own LSTM."""
    weight = getattr(lstm, f"weight_ih_l{layer}{suffix}")
    single = nn.LSTM(weight.shape[1], lstm.hidden_size, batch_first=True)
    with torch.no_grad():
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{kind}_l0").copy_(getattr(lstm, f"{kind}_l{layer}{suffix}"))
    return single


class PaddedBiLSTM(nn.Module):
    """A bidirectional batch-first ``nn.LSTM`` over padded rows: ``[B, T, D]`` -> ``[B, T, 2H]``, the backward
    direction starting at each row's last token (what packing does), layer by layer."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        if not (lstm.bidirectional and lstm.batch_first) or lstm.proj_size:
            raise ExportError("the encoder's LSTM is not a plain bidirectional batch-first LSTM")
        self.forward_layers = nn.ModuleList(one_direction(lstm, k, "") for k in range(lstm.num_layers))
        self.backward_layers = nn.ModuleList(one_direction(lstm, k, "_reverse") for k in range(lstm.num_layers))

    def forward(self, x: Tensor, lengths: Tensor, positions: Tensor) -> Tensor:
        for ahead, behind in zip(self.forward_layers, self.backward_layers, strict=True):
            out_ahead, _ = ahead(x)  # shape: [B, T, H]; a position sees only those before it
            out_behind, _ = behind(reverse_within(x, lengths, positions))
            x = torch.cat([out_ahead, reverse_within(out_behind, lengths, positions)], dim=2)
        return x


class CharFeatures(nn.Module):
    """The encoder's character features of each distinct word ``[U, L]`` -> ``[U, F]``, over padded words."""

    def __init__(self, char_encoder: nn.Module, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.embed = char_encoder.embed
        if kind == "cnn":
            self.conv = char_encoder.conv
        else:
            self.ahead = one_direction(char_encoder.lstm, 0, "")
            self.behind = one_direction(char_encoder.lstm, 0, "_reverse")

    def forward(self, chars: Tensor) -> Tensor:
        real = chars != SPECIAL_IDS["pad"]  # shape: [U, L]; left-aligned
        x = self.embed(chars) * real[:, :, None]  # shape: [U, L, char_dim]
        if self.kind == "cnn":
            # a word's last character sees padding (zeros) on its right, as the encoder's one PAD between words
            h = self.conv(x.transpose(1, 2))  # shape: [U, filters, L]
            return h.masked_fill(~real[:, None, :], float("-inf")).amax(2)  # shape: [U, filters]
        lengths = real.sum(1).clamp(min=1)  # shape: [U]
        positions = torch.cumsum(torch.ones_like(chars), 1) - 1  # shape: [U, L]
        last = (lengths - 1)[:, None, None].expand(-1, 1, self.ahead.hidden_size)  # shape: [U, 1, H]
        ahead, _ = self.ahead(x)
        behind, _ = self.behind(reverse_within(x, lengths, positions))
        return torch.cat([ahead.gather(1, last)[:, 0], behind.gather(1, last)[:, 0]], dim=1)  # shape: [U, 2H]


# -- checks ------------------------------------------------------------------------------------------
def probe_sentences(words: list[str], lengths: tuple[int, ...]) -> list[list[str]]:
    """Sentences of the given lengths from the vocabulary, with an unknown, a capitalised, a numeric and an
    overlong token among them, to trace and check the graph on."""
    known = words[2:] or ["the"]
    extra = ["Zyxwvut", "1984", "Mixed-Case42", "x" * 80]
    pool = [known[i % len(known)] if i % 3 else extra[(i // 3) % len(extra)] for i in range(sum(lengths))]
    sentences, at = [], 0
    for n in lengths:
        sentences.append(pool[at : at + n])
        at += n
    return sentences


def reference_scores(tagger: Tagger, features: dict[str, Tensor]) -> tuple[Tensor, ...]:
    """The scores the model decodes from, computed by its own encoder."""
    hidden, mask = tagger.encode(features)
    return decoder_scores(tagger.decoder_name, tagger.decoder, hidden.float(), mask)


def _compare(what: str, got: tuple, expected: tuple, lengths: Tensor) -> None:
    """Refuse the export when ``got`` differs from ``expected`` at real tokens by more than :data:`SCORE_TOLERANCE`."""
    for name, a, b in zip(("scores", "transitions"), got, expected, strict=False):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        mask = torch.arange(a.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]  # shape: [B, T]
        a, b = a[mask], b[mask]
        finite = torch.isfinite(b)
        differs = (finite != torch.isfinite(a)).any() or not torch.allclose(a[finite], b[finite], atol=SCORE_TOLERANCE,
                                                                            rtol=SCORE_TOLERANCE)
        if differs:
            gap = (a[finite] - b[finite]).abs().max().item() if finite.any() else float("nan")
            raise ExportError(f"{what} does not reproduce the model's {name} (largest difference {gap:.3g}); "
                              "nothing was written")


def check_runtime(path: Path, graph: BiLSTMScores, tagger: Tagger) -> None:
    """onnxruntime runs the written graph on sentences of other shapes than traced, with torch's scores."""
    import onnxruntime

    features = tagger.featurize(probe_sentences(tagger.encoder.words, (2, 9, 4, 5)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(graph.output_names, {name: features[name].numpy() for name in graph.input_names})
    with torch.no_grad():
        expected = graph(*(features[name] for name in graph.input_names))
    _compare("onnxruntime", tuple(got), expected, features["lengths"])


def runtime_config(tagger: Tagger, graph: BiLSTMScores) -> dict[str, Any]:
    """``config.json`` of the export: what :class:`~tagpipe.plugins.export.onnx_runtime.OnnxTagger` reads."""
    cfg = tagger.encoder.cfg
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "task": tagger.task,
        "lang": tagger.lang,
        "scheme": tagger.scheme,
        "labels": tagger.labels,
        "encoder": tagger.encoder_name,
        "decoder": tagger.decoder_name,
        "featurizer": {"lowercase": cfg.lowercase, "normalize_digits": cfg.normalize_digits,
                       "max_word_len": cfg.max_word_len, "bigrams": tagger.encoder.bigram_embed is not None,
                       **SPECIAL_IDS},
        "inputs": graph.input_names,
        "outputs": graph.output_names,
        "decoding": decoding(tagger),
    }


def decoding(tagger: Tagger) -> dict[str, Any]:
    """How the runtime decodes the scores: argmax, or Viterbi with these transitions (``null``: forbidden)."""
    decoder, name = tagger.decoder, tagger.decoder_name
    with torch.no_grad():
        if name == "tagpipe.softmax.v1":
            if not decoder.constrained:
                return {"method": "argmax"}
            chain = (decoder.transition_penalty, decoder.start_penalty, decoder.end_penalty)
        elif name == "tagpipe.crf.v1":
            chain = decoder.crf.scores(hard=True)
        else:  # an MEMM: the graph gives the per-step scores; the scheme forbids the rest
            chain = tuple(torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))
                          for ok in (decoder.allowed, decoder.start_ok, decoder.end_ok))
    transitions, start, end = (t.detach().float().numpy() for t in chain)
    return {"method": "viterbi", "transitions": to_json(transitions), "start": to_json(start), "end": to_json(end)}
