"""Decoding for :class:`tagpipe.plugins.seq2seq.model.Seq2SeqModel`: greedy, beam search and top-k/top-p sampling.

The decoders are written once against a *stepper*, which turns the tokens chosen so far into
next-token logits:

- :class:`CachedStepper` encodes the source and ``[BOS]`` once, keeps every layer's keys and
  values, and then runs one new target token per step through the layers (its query attends to
  the cached source and earlier target positions), so a step costs ``O(1)`` positions;
- :class:`UncachedStepper` re-encodes the whole packed row (source + target so far) every step.

Both run the same :meth:`Seq2SeqModel.run_layers` with the same UniLM mask, so they compute the
same numbers (the test checks identical outputs); the cache exists only for speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from tagpipe.plugins.seq2seq.attention import KeyValues, Packed, unilm_mask
from tagpipe.plugins.seq2seq.names import STRATEGIES

if TYPE_CHECKING:
    from tagpipe.plugins.seq2seq.model import Seq2SeqModel



class Stepper(Protocol):
    def start(self) -> Tensor:
        """Logits ``[N, V]`` of the first target token."""

    def step(self, tokens: Tensor) -> Tensor:
        """Feed ``tokens`` ``[N]``; logits ``[N, V]`` of the next token."""

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` ``[N']`` (beam search), in that order."""


class CachedStepper:
    """Source encoded once; each step runs one position per row over the cached keys/values."""

    def __init__(self, model: Seq2SeqModel, sources: list[list[int]]) -> None:
        self.model = model
        self.sources = sources
        self.past: KeyValues = []
        self.valid = torch.empty(0)  # shape: [N, Lk] bool, keys that may be seen
        self.next_position = torch.empty(0)  # shape: [N]

    def start(self) -> Tensor:
        model, device = self.model, self.model.device
        packed = model.pack(self.sources, [[model.bos_id]] * len(self.sources))
        packed = _to(packed, device)
        logits, self.past = model.forward_packed(packed)  # shape: [N, 1, V]
        self.valid = packed.valid
        self.next_position = torch.tensor([len(s) + 1 for s in self.sources], device=device)
        return logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        model = self.model
        ids = tokens[:, None]  # shape: [N, 1]
        hidden = model.embed(ids, torch.ones_like(ids), self.next_position[:, None])  # shape: [N, 1, H]
        self.valid = torch.cat([self.valid, torch.ones_like(self.valid[:, :1])], dim=1)  # shape: [N, Lk]
        zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        mask = torch.where(self.valid, zero, torch.finfo(hidden.dtype).min)[:, None, None, :]  # shape: [N, 1, 1, Lk]
        hidden, self.past = model.run_layers(hidden, mask, self.past)
        self.next_position = self.next_position + 1
        return model.lm_logits(hidden[:, -1])

    def reorder(self, index: Tensor) -> None:
        self.past = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.past]
        self.valid = self.valid.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)


class UncachedStepper:
    """Every step re-encodes the packed row: source, ``[BOS]`` and the target so far."""

    def __init__(self, model: Seq2SeqModel, sources: list[list[int]]) -> None:
        self.model = model
        self.source = _to(model.pack(sources, [[]] * len(sources)), model.device)  # source columns only
        self.source_lengths = torch.tensor([len(s) for s in sources], device=model.device)
        self.targets = torch.full((len(sources), 1), model.bos_id, dtype=torch.long, device=model.device)

    def _logits(self) -> Tensor:
        src, tgt = self.source, self.targets
        n, t = tgt.shape
        offsets = torch.arange(t, device=tgt.device)[None, :]  # shape: [1, T]
        packed = Packed(
            input_ids=torch.cat([src.input_ids, tgt], dim=1),
            segment_ids=torch.cat([src.segment_ids, torch.ones_like(tgt)], dim=1),
            position_ids=torch.cat([src.position_ids, self.source_lengths[:, None] + offsets], dim=1),
            valid=torch.cat([src.valid, torch.ones_like(tgt, dtype=torch.bool)], dim=1),
            source_width=src.source_width,
        )
        hidden = self.model.embed(packed.input_ids, packed.segment_ids, packed.position_ids)
        hidden, _ = self.model.run_layers(hidden, unilm_mask(packed.segment_ids, packed.valid, hidden.dtype))
        return self.model.lm_logits(hidden[:, -1])

    def start(self) -> Tensor:
        return self._logits()

    def step(self, tokens: Tensor) -> Tensor:
        self.targets = torch.cat([self.targets, tokens[:, None]], dim=1)
        return self._logits()

    def reorder(self, index: Tensor) -> None:
        src = self.source
        self.source = Packed(src.input_ids.index_select(0, index), src.segment_ids.index_select(0, index),
                             src.position_ids.index_select(0, index), src.valid.index_select(0, index),
                             src.source_width)
        self.source_lengths = self.source_lengths.index_select(0, index)
        self.targets = self.targets.index_select(0, index)


def _to(packed: Packed, device: torch.device) -> Packed:
    return Packed(packed.input_ids.to(device), packed.segment_ids.to(device), packed.position_ids.to(device),
                  packed.valid.to(device), packed.source_width)


# -- decoders ----------------------------------------------------------------------------------
def generate(model: Seq2SeqModel, sources: Sequence[str], *, strategy: str = "greedy", max_length: int | None = None,
             min_length: int = 0, num_beams: int = 4, length_penalty: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, temperature: float = 1.0, seed: int | None = 0, use_cache: bool = True,
             batch_size: int = 16) -> list[list[int]]:
    """Generated target ids (without ``[SEP]``) for each source text.

    ``max_length``: generated tokens, ``[SEP]`` included (default the model's
    ``max_target_length``); ``min_length``: ``[SEP]`` is forbidden before that many tokens.
    ``beam``: ``num_beams`` hypotheses, finished ones ranked by ``log p / length ** length_penalty``.
    ``sample``: ``temperature``, then the ``top_k`` most likely (0: all) and the smallest set of
    mass ``top_p``, drawn with a generator seeded by ``seed`` (one stream for the whole call).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if num_beams < 1 or top_k < 0 or not 0.0 < top_p <= 1.0 or temperature <= 0.0:
        raise ValueError("need num_beams >= 1, top_k >= 0, 0 < top_p <= 1 and temperature > 0")
    max_length = max_length or model.cfg.max_target_length
    room = int(model.mlm.config.max_position_embeddings) - model.cfg.max_source_length - 1  # after [BOS]
    if not 1 <= max_length <= room:
        raise ValueError(f"max_length must be in [1, {room}]: the model has "
                         f"{model.mlm.config.max_position_embeddings} positions and sources take up to "
                         f"{model.cfg.max_source_length} + [BOS]")
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    make = CachedStepper if use_cache else UncachedStepper
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(sources), batch_size):
                ids = model.encode_sources(sources[start : start + batch_size])
                if strategy == "beam":
                    out.extend(beam_search(make(model, [s for s in ids for _ in range(num_beams)]), len(ids),
                                           model.eos_id, max_length, min_length, num_beams, length_penalty))
                else:
                    sampler = None if strategy == "greedy" else (generator, top_k, top_p, temperature)
                    out.extend(greedy_or_sample(make(model, ids), model.eos_id, max_length, min_length, sampler))
    finally:
        model.train(was_training)
    return out


def _forbid_eos(logits: Tensor, eos: int, step: int, min_length: int) -> Tensor:
    if step < min_length:
        logits = logits.clone()
        logits[:, eos] = float("-inf")
    return logits


def greedy_or_sample(stepper: Stepper, eos: int, max_length: int, min_length: int,
                     sampler: tuple[torch.Generator, int, float, float] | None) -> list[list[int]]:
    """Greedy (``sampler`` None) or sampled decoding; stops when every row produced ``[SEP]``."""
    logits = stepper.start()  # shape: [N, V]
    n = logits.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    chosen: list[Tensor] = []
    for step in range(max_length):
        logits = _forbid_eos(logits.float(), eos, step, min_length)
        tokens = logits.argmax(-1) if sampler is None else sample(logits, *sampler)  # shape: [N]
        tokens = torch.where(done, torch.full_like(tokens, eos), tokens)
        chosen.append(tokens)
        done = done | (tokens == eos)
        if bool(done.all()) or step + 1 == max_length:
            break
        logits = stepper.step(tokens)
    rows = torch.stack(chosen, 1).tolist() if chosen else [[] for _ in range(n)]
    return [row[: row.index(eos)] if eos in row else row for row in rows]


def sample(logits: Tensor, generator: torch.Generator, top_k: int, top_p: float, temperature: float) -> Tensor:
    """One token per row ``[N]`` from ``logits`` ``[N, V]`` filtered by top-k, then top-p."""
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # shape: [N, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        mass_before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # shape: [N, V]
        drop_sorted = mass_before >= top_p  # keeps the most likely token at least
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)


def beam_search(stepper: Stepper, batch: int, eos: int, max_length: int, min_length: int, beams: int,
                length_penalty: float) -> list[list[int]]:
    """Beam search over ``batch * beams`` stepper rows (each source repeated ``beams`` times).

    A hypothesis ending in ``[SEP]`` is finished with score ``sum log p / length ** length_penalty``
    (length counts ``[SEP]``); a source is done once it has ``beams`` finished hypotheses, and at
    ``max_length`` the live beams are ranked the same way.
    """
    logits = stepper.start()  # shape: [B * K, V]
    vocab = logits.shape[-1]
    device = logits.device
    scores = torch.full((batch, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: expand only the first
    seqs = torch.zeros((batch * beams, 0), dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for step in range(max_length):
        logp = _forbid_eos(logits.float(), eos, step, min_length).log_softmax(-1)  # shape: [B * K, V]
        total = (scores[:, :, None] + logp.view(batch, beams, vocab)).view(batch, -1)  # shape: [B, K * V]
        top_scores, top_index = total.topk(min(2 * beams, total.shape[-1]), dim=-1)  # shape: [B, 2K]
        rows, tokens, new_scores = [], [], []
        for b in range(batch):
            keep: list[tuple[int, int, float]] = []
            if not done[b]:
                for value, index in zip(top_scores[b].tolist(), top_index[b].tolist(), strict=True):
                    beam, token = divmod(index, vocab)
                    if value == float("-inf"):
                        break
                    if token == eos:
                        hyp = seqs[b * beams + beam].tolist()
                        finished[b].append((value / (len(hyp) + 1) ** length_penalty, hyp))
                    else:
                        keep.append((beam, token, value))
                    if len(keep) == beams:
                        break
                done[b] = len(finished[b]) >= beams or not keep
            keep += [(0, eos, float("-inf"))] * (beams - len(keep))
            rows += [b * beams + beam for beam, _, _ in keep]
            tokens += [token for _, token, _ in keep]
            new_scores += [value for _, _, value in keep]
        if all(done):
            break
        index = torch.tensor(rows, device=device)
        chosen = torch.tensor(tokens, device=device)
        seqs = torch.cat([seqs.index_select(0, index), chosen[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=device).view(batch, beams)
        if step + 1 == max_length:
            break
        stepper.reorder(index)
        logits = stepper.step(chosen)
    for b in range(batch):
        if not done[b]:
            for k in range(beams):
                value = float(scores[b, k])
                if value > float("-inf"):
                    hyp = seqs[b * beams + k].tolist()
                    finished[b].append((value / max(len(hyp), 1) ** length_penalty, hyp))
    return [max(f, key=lambda pair: pair[0])[1] if f else [] for f in finished]


def tokens_per_second(model: Seq2SeqModel, sources: Sequence[str], **options: Any) -> tuple[float, int]:
    """``(generated tokens per second, tokens)`` of one :func:`generate` call (benchmarks)."""
    import time

    start = time.perf_counter()
    ids = generate(model, sources, **options)
    seconds = time.perf_counter() - start
    count = sum(len(row) + 1 for row in ids)  # [SEP] included
    return count / seconds, count
