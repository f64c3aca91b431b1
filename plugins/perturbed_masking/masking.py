"""Perturbed Masking (Wu et al., ACL 2020): impact matrices read off a pretrained encoder.

For a sentence of n words, ``F[i, j] = dist(H(x - {i})_i, H(x - {i, j})_i)``: how much
masking word j moves word i's state at the probed layer once word i itself is masked.
Matrices here are ``[n + 1, n + 1]`` with index 0 for ``[CLS]`` and words at 1..n; row 0 is
``F[0, j] = dist(H(x)_cls, H(x - {j})_cls)`` (the impact of word j on ``[CLS]``), column 0
and the diagonal are 0. Multi-subword words are masked as a whole and pooled.

Why this is faster than the reference loop (n batches of n copies, every layer):
``x - {i, j}`` is the same copy as ``x - {j, i}``, so 1 + n + n(n-1)/2 copies give the whole
matrix; copies of several sentences of the same subword length share batches (no padding);
only layers up to the probed one run, and that last layer computes only the rows read.
The protocol (orientation, root, decoding, scoring) and segmentation are in
:mod:`tagpipe.plugins.perturbed_masking.protocol`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tagpipe.devices import resolve_device
from tagpipe.errors import ConfigValueError, ModelError
from tagpipe.names import PRECISIONS
from tagpipe.plugins.encoders.names import POOLINGS
from tagpipe.plugins.encoders.subwords import align_words, check_fast, pool_words
from tagpipe.plugins.perturbed_masking.names import DISTANCES
from tagpipe.plugins.perturbed_masking.protocol import OptionError

NONE = -1  # "no word" in a copy's (a, b) pair


def distance(x: Tensor, y: Tensor, kind: str) -> Tensor:
    """Row-wise distance ``[...]`` of ``[..., H]`` states: Euclidean, or 1 - cosine similarity."""
    if kind == "euclidean":
        return (x - y).norm(dim=-1)
    return 1.0 - F.cosine_similarity(x, y, dim=-1)


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or None): the GPU when there is one; else as :func:`tagpipe.devices.resolve_device` reads it."""
    try:
        return resolve_device("auto" if device is None else device, option="device")
    except ConfigValueError as exc:
        raise OptionError(str(exc)) from None


class ImpactModel:
    """A pretrained encoder and tokenizer turned into an impact-matrix function.

    ``layer`` is 1..L (0 = embeddings, negative counts from the top: -1 = last layer).
    ``batch_tokens`` bounds one forward pass (copies x subwords); ``chunk_sentences``
    bounds how many sentences' copies are held at once. ``precision`` bf16/fp16 runs the
    encoder under autocast (distances are taken in float32): on a CPU with AVX512-BF16, bf16 is
    faster (docs/benchmarks.md), with matrices within about 1% of float32 (fp32, the default, is
    exact).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        layer: int = -1,
        distance: str = "euclidean",
        pooling: str = "first",
        device: str | None = "auto",
        batch_tokens: int = 16384,
        chunk_sentences: int = 16,
        precision: str = "fp32",
    ) -> None:
        check_fast(tokenizer)
        if precision not in PRECISIONS:
            raise OptionError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if distance not in DISTANCES:
            raise OptionError(f"unknown distance {distance!r}; expected one of {DISTANCES}")
        if pooling not in POOLINGS:
            raise OptionError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if tokenizer.mask_token_id is None:
            raise ModelError("the tokenizer has no mask token; perturbed masking needs one")
        self.device = pick_device(device)
        self.model = model.to(self.device, dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.num_layers = int(model.config.num_hidden_layers)
        self.layer = self.resolve_layer(layer)
        self.distance, self.pooling = distance, pooling
        self.batch_tokens, self.chunk_sentences = batch_tokens, chunk_sentences
        self.precision = precision
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512))

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> ImpactModel:
        """Load a local HuggingFace folder (a masked LM or a bare encoder); no hub access."""
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a HuggingFace model folder (no config.json)")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the MLM head's "unexpected keys" report is expected
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot load the model or tokenizer: {exc}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        return cls(model, tokenizer, **options)

    def resolve_layer(self, layer: int) -> int:
        resolved = layer + self.num_layers + 1 if layer < 0 else layer
        if not 0 <= resolved <= self.num_layers:
            raise OptionError(f"layer {layer} out of range: the model has layers 1..{self.num_layers}")
        return resolved

    # -- public API ------------------------------------------------------------------------

    def matrices(self, sentences: Sequence[Sequence[str]]) -> list[Tensor]:
        """One impact matrix ``[n + 1, n + 1]`` (CPU, float32) per sentence, at ``self.layer``."""
        return self.matrices_by_layer(sentences, [self.layer])[self.layer]

    def matrices_by_layer(self, sentences: Sequence[Sequence[str]], layers: Sequence[int]) -> dict:
        """``{layer: [matrix per sentence]}`` from one pass up to the highest layer asked."""
        return self._run(sentences, "full", layers)

    def adjacent_impacts(self, sentences: Sequence[Sequence[str]]) -> list[Tensor]:
        """Per sentence of m units, ``[2, m - 1]``: ``F[k, k+1]`` and ``F[k+1, k]`` (0-based k).

        Only the 2m - 1 copies these need are run (segmentation does not need the matrix).
        """
        return self._run(sentences, "adjacent", [self.layer])[self.layer]

    # -- the engine --------------------------------------------------------------------------

    @staticmethod
    def _copies(plan: str, n: int) -> Tensor:
        """``[C, 2]`` masked word pairs (``NONE`` = nothing): the copies ``plan`` reads."""
        singles = torch.stack([torch.arange(n), torch.full((n,), NONE)], 1)
        if plan == "full":
            pairs = torch.triu_indices(n, n, 1).T  # i < j
            return torch.cat([torch.tensor([[NONE, NONE]]), singles, pairs])
        pairs = torch.stack([torch.arange(n - 1), torch.arange(1, n)], 1) if n > 1 else torch.empty(0, 2)
        return torch.cat([singles, pairs.long()])

    def _run(self, sentences: Sequence[Sequence[str]], plan: str, layers: Sequence[int]) -> dict:
        layers = sorted({self.resolve_layer(x) for x in layers})
        results: dict[int, list[Tensor | None]] = {x: [None] * len(sentences) for x in layers}
        order = sorted(range(len(sentences)), key=lambda k: len(sentences[k]))
        for start in range(0, len(order), self.chunk_sentences):
            chunk = order[start : start + self.chunk_sentences]
            align = align_words(self.tokenizer, [sentences[k] for k in chunk], max_length=self.max_length)
            copies = [self._copies(plan, n) for n in align.n_words]
            states = self._encode(align, copies, layers)
            for layer in layers:
                for s, k in enumerate(chunk):
                    a, b, cls = states[layer][s]
                    results[layer][k] = self._assemble(plan, copies[s], a, b, cls)
        return results  # type: ignore[return-value]

    def _assemble(self, plan: str, copies: Tensor, a: Tensor, b: Tensor, cls: Tensor) -> Tensor:
        """Distances from the states read in each copy (``a``/``b``/``cls``: ``[C, H]``)."""
        d = self.distance
        if plan == "adjacent":
            m = int((copies[:, 1] == NONE).sum())
            base = a[:m]  # word k alone masked, read at k
            left = distance(base[:-1], a[m:], d)  # F[k, k+1]
            right = distance(base[1:], b[m:], d)  # F[k+1, k]
            return torch.stack([left, right]).cpu()
        n = int((copies[:, 1] == NONE).sum()) - 1
        matrix = torch.zeros(n + 1, n + 1)
        base = a[1 : n + 1]  # [n, H]
        matrix[0, 1:] = distance(cls[:1], cls[1 : n + 1], d)
        i, j = copies[n + 1 :, 0], copies[n + 1 :, 1]
        matrix[i + 1, j + 1] = distance(base[i], a[n + 1 :], d).cpu()
        matrix[j + 1, i + 1] = distance(base[j], b[n + 1 :], d).cpu()
        return matrix

    @torch.inference_mode()
    def _encode(self, align, copies: list[Tensor], layers: list[int]) -> dict:
        """Run every copy; per layer and sentence, the pooled states of a, b and [CLS] ``[C, H]``."""
        lengths = align.lengths
        width = max(align.n_words + [1])
        spans = torch.zeros(len(copies), width, 2, dtype=torch.long)  # [S, W, 2] first, end
        for s in range(len(copies)):
            if align.n_words[s]:
                spans[s, : align.n_words[s]] = torch.tensor(align.spans(s))
        starts = torch.cumsum(torch.tensor([0] + [len(c) for c in copies]), 0).tolist()
        total, hidden = starts[-1], self.model.config.hidden_size
        flat = {x: torch.zeros(3, total, hidden) for x in layers}  # a, b, cls per job
        # (sentence, copy) jobs grouped by subword length: batches need no padding
        by_length: dict[int, list[int]] = {}
        for s in range(len(copies)):
            by_length.setdefault(lengths[s], []).append(s)
        sent_of = torch.cat([torch.full((len(c),), s) for s, c in enumerate(copies)])  # [K]
        pairs = torch.cat(copies)  # [K, 2]
        for length, group in by_length.items():
            jobs = torch.cat([torch.arange(starts[s], starts[s + 1]) for s in group])
            step = max(1, self.batch_tokens // length)
            for begin in range(0, len(jobs), step):
                batch = jobs[begin : begin + step]
                with self._autocast():
                    read = self._forward(align, spans, sent_of[batch], pairs[batch], length, layers)
                for layer, states in read.items():
                    flat[layer][:, batch] = torch.stack(states)
        return {
            x: [tuple(flat[x][:, starts[s] : starts[s + 1]]) for s in range(len(copies))] for x in layers
        }

    def _forward(self, align, spans, sent: Tensor, pair: Tensor, length: int, layers: list[int]) -> dict:
        """One batch of N copies of length T: ``{layer: (a, b, cls)}`` each ``[N, H]`` on CPU."""
        sent, pair = sent.long(), pair.long()
        dev = self.device
        ids = align.input_ids[sent, :length]  # [N, T]
        words = align.word_index[sent, :length]  # [N, T]
        hit = pair.masked_fill(pair == NONE, -2)  # -2 never matches (specials are -1)
        masked = (words == hit[:, :1]) | (words == hit[:, 1:])  # [N, T]
        ids = ids.masked_fill(masked, self.tokenizer.mask_token_id).to(dev)
        rows, row_word = self._rows(spans, sent, pair)
        rows, row_word = rows.to(dev), row_word.to(dev)
        top = max(layers)
        read: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

        def take(states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """[N, R, H] rows -> pooled word a, word b and [CLS], each [N, H]."""
            states = states.float()  # distances in float32 whatever the precision
            pooled = pool_words(states, row_word, 2, self.pooling)  # [N, 2, H]
            return pooled[:, 0].cpu(), pooled[:, 1].cpu(), states[:, 0].cpu()

        stack = _bert_like(self.model)
        if stack is None:  # unknown architecture: run it whole and read the layers asked
            hs = self.model(input_ids=ids, output_hidden_states=True).hidden_states
            for x in layers:
                read[x] = take(_gather_rows(hs[x], rows))
            return read
        embeddings, blocks = stack
        h = embeddings(input_ids=ids)  # [N, T, H]
        if 0 in layers:
            read[0] = take(_gather_rows(h, rows))
        for x, block in enumerate(blocks[:top], start=1):
            if x == top:
                read[x] = take(_top_rows(block, h, rows))
                break
            result = block(h)
            h = result[0] if isinstance(result, tuple) else result
            if x in layers:
                read[x] = take(_gather_rows(h, rows))
        return read

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _rows(self, spans: Tensor, sent: Tensor, pair: Tensor) -> tuple[Tensor, Tensor]:
        """Positions read per copy ``[N, R]`` ([CLS], then a's and b's subwords) and their word.

        ``spans`` is ``[S, W, 2]`` (first subword, end) per sentence and word.
        """
        sizes = spans[..., 1] - spans[..., 0]  # [S, W]
        width = 1 if self.pooling == "first" else max(1, int(sizes.max()))
        offset = torch.arange(width)  # [width]
        parts, labels = [torch.zeros(len(sent), 1, dtype=torch.long)], [torch.full((len(sent), 1), -1)]
        for slot in (0, 1):
            word = pair[:, slot]  # [N]
            known = word != NONE
            first = spans[sent, word.clamp(min=0), 0]  # [N]
            size = torch.where(known, sizes[sent, word.clamp(min=0)], 0)  # [N]
            valid = offset < size[:, None]  # [N, width]
            parts.append(torch.where(valid, first[:, None] + offset, 0))
            labels.append(torch.where(valid, slot, -1))
        return torch.cat(parts, 1), torch.cat(labels, 1)


def _bert_like(model: Any) -> tuple[Any, Any] | None:
    """``(embeddings, layers)`` when the model is a BERT-style encoder we can run layer by layer."""
    embeddings = getattr(model, "embeddings", None)
    blocks = getattr(getattr(model, "encoder", None), "layer", None)
    if embeddings is None or blocks is None or getattr(model.config, "is_decoder", False):
        return None
    if getattr(model.config, "position_embedding_type", "absolute") != "absolute":
        return None
    return embeddings, blocks


def _gather_rows(states: Tensor, rows: Tensor) -> Tensor:
    """``states[n, rows[n, r]]``: ``[N, T, H]`` x ``[N, R]`` -> ``[N, R, H]``."""
    return states.gather(1, rows.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


def _top_rows(block: Any, h: Tensor, rows: Tensor) -> Tensor:
    """A BERT layer's output at ``rows`` only ``[N, R, H]``: keys/values from all T positions.

    Falls back to the whole layer when the block is not laid out like ``BertLayer``.
    """
    att = getattr(getattr(block, "attention", None), "self", None)
    if att is None or not all(hasattr(att, k) for k in ("query", "key", "value")) or not all(
        hasattr(block, k) for k in ("intermediate", "output")
    ):
        result = block(h)
        return _gather_rows(result[0] if isinstance(result, tuple) else result, rows)
    n, t, hidden = h.shape
    heads = att.num_attention_heads
    size = hidden // heads
    x = _gather_rows(h, rows)  # [N, R, H]
    q = att.query(x).view(n, -1, heads, size).transpose(1, 2)  # [N, heads, R, size]
    k = att.key(h).view(n, t, heads, size).transpose(1, 2)  # [N, heads, T, size]
    v = att.value(h).view(n, t, heads, size).transpose(1, 2)
    scale = getattr(att, "scaling", size**-0.5)
    ctx = F.scaled_dot_product_attention(q, k, v, scale=scale)  # [N, heads, R, size]
    ctx = ctx.transpose(1, 2).reshape(n, -1, hidden)  # [N, R, H]
    attended = block.attention.output(ctx, x)
    return block.output(block.intermediate(attended), attended)
