"""The two relation-triple heads over word features, their losses and their decoders.

Both heads read word features ``[B, W, H]`` (one vector per word, from :mod:`tagpipe.plugins.encoders.bert`)
and speak in word offsets. A triple is ``(s_start, s_end, relation, o_start, o_end)`` with
*inclusive* ends inside this module (:class:`Triple`); :mod:`tagpipe.plugins.triples.model` converts.

- :class:`PointerHead` (CasRel, "half pointer, half tagging"): sigmoid start/end pointers for
  subjects; then, for each subject, start/end pointers per relation for its objects, read from
  the word features plus the subject's representation (mean of its first and last word).
  One subject in several triples, and one pair in several relations, are separate pointer
  columns, so overlapping triples need nothing special.
- :class:`GPLinkerHead` (GlobalPointer): span scores ``[B, 2, W, W]`` for subjects and objects,
  and per relation head-pair ``[B, R, W, W]`` (subject start x object start) and tail-pair scores
  (subject end x object end), trained with the ZLPR multi-label loss (:func:`zlpr_loss`).

The decoders (:func:`pointer_decode`, :func:`gplinker_decode`) are plain functions of scores, so
tests run them on oracle scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

HEADS = ("pointer", "gplinker")
NEG = -1e12  # a score that no threshold passes (masked positions)


class Triple(NamedTuple):
    """One relation triple in word offsets; ends are inclusive."""

    s_start: int
    s_end: int
    relation: int
    o_start: int
    o_end: int


# -- the ZLPR loss ---------------------------------------------------------------------------------
def zlpr_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Su's multi-label "softmax + cross-entropy" loss, summed over the last dimension.

    ``log(1 + sum_neg exp(s)) + log(1 + sum_pos exp(-s))`` per row. ``scores`` and ``labels``
    (0/1) are ``[..., C]``; returns ``[...]``. Positions scored ``NEG`` (masked) add nothing.
    """
    positive = labels.bool()
    drop = torch.full_like(scores, float("-inf"))
    neg = torch.where(positive, drop, scores)  # shape: [..., C]; positives leave the negative sum
    pos = torch.where(positive, -scores, drop)  # negatives (and masked) leave the positive sum
    zeros = torch.zeros_like(scores[..., :1])
    neg_loss = torch.logsumexp(torch.cat([neg, zeros], dim=-1), dim=-1)
    pos_loss = torch.logsumexp(torch.cat([pos, zeros], dim=-1), dim=-1)
    return neg_loss + pos_loss


# -- the pointer (CasRel) head ----------------------------------------------------------------------
class PointerHead(nn.Module):
    """Subject pointers, then object pointers per relation conditioned on a subject."""

    def __init__(self, hidden: int, num_relations: int) -> None:
        super().__init__()
        if hidden < 1 or num_relations < 1:
            raise ValueError(f"hidden and num_relations must be positive, got {hidden}, {num_relations}")
        self.num_relations = num_relations
        self.subject = nn.Linear(hidden, 2)  # start, end
        self.condition = nn.Linear(hidden, hidden)
        self.object = nn.Linear(hidden, 2 * num_relations)  # start x R, end x R

    def subject_logits(self, words: Tensor) -> Tensor:
        """``[B, W, H]`` -> ``[B, W, 2]`` subject start/end logits."""
        return self.subject(words)

    def object_logits(self, words: Tensor, subjects: Tensor) -> Tensor:
        """Object logits ``[N, W, R, 2]`` (start, end) for ``N`` subjects.

        ``words`` ``[N, W, H]`` (each subject's sentence), ``subjects`` ``[N, 2]`` inclusive spans.
        """
        rows = torch.arange(words.shape[0], device=words.device)
        subject = (words[rows, subjects[:, 0]] + words[rows, subjects[:, 1]]) / 2  # shape: [N, H]
        states = words + self.condition(subject).unsqueeze(1)  # shape: [N, W, H]
        return self.object(states).view(words.shape[0], words.shape[1], 2, self.num_relations).transpose(2, 3)

    def loss(self, words: Tensor, mask: Tensor, gold: Sequence[Sequence[Triple]]) -> Tensor:
        """BCE summed over pointers (and relations), averaged over words: subjects, then the
        objects of every gold subject (CasRel trains on one sampled subject; we use them all)."""
        batch, width, _ = words.shape
        sub_target = words.new_zeros(batch, width, 2)
        rows, spans, obj_targets = [], [], []
        for b, triples in enumerate(gold):
            by_subject: dict[tuple[int, int], list[Triple]] = {}
            for t in triples:
                sub_target[b, t.s_start, 0] = 1.0
                sub_target[b, t.s_end, 1] = 1.0
                by_subject.setdefault((t.s_start, t.s_end), []).append(t)
            for span, items in by_subject.items():
                target = words.new_zeros(width, self.num_relations, 2)
                for t in items:
                    target[t.o_start, t.relation, 0] = 1.0
                    target[t.o_end, t.relation, 1] = 1.0
                rows.append(b)
                spans.append(span)
                obj_targets.append(target)
        m = mask.to(words.dtype)  # shape: [B, W]
        sub_loss = F.binary_cross_entropy_with_logits(self.subject_logits(words), sub_target, reduction="none")
        loss = (sub_loss.sum(-1) * m).sum() / m.sum().clamp(min=1)
        if rows:
            index = torch.tensor(rows, device=words.device)
            logits = self.object_logits(words[index], torch.tensor(spans, device=words.device))
            obj_loss = F.binary_cross_entropy_with_logits(logits, torch.stack(obj_targets), reduction="none")
            om = m[index]  # shape: [N, W]
            loss = loss + (obj_loss.sum((-1, -2)) * om).sum() / om.sum().clamp(min=1)
        return loss

    @torch.no_grad()
    def decode(self, words: Tensor, lengths: Sequence[int], threshold: float = 0.0) -> list[list[Triple]]:
        """Triples of each sentence; ``threshold`` is on logits (0.0 = probability 0.5)."""
        sub = self.subject_logits(words)  # shape: [B, W, 2]
        out = []
        for b, n in enumerate(lengths):
            def objects(spans: list[tuple[int, int]], b: int = b, n: int = n) -> Tensor:
                rows = words[b : b + 1, :n].expand(len(spans), -1, -1)
                return self.object_logits(rows, torch.tensor(spans, device=words.device))
            out.append(pointer_decode(sub[b, :n, 0], sub[b, :n, 1], objects, threshold))
        return out


def nearest_spans(starts: Tensor, ends: Tensor) -> list[tuple[int, int]]:
    """CasRel's rule: each start (bool ``[W]``) pairs with the nearest end at or after it."""
    end_positions = ends.nonzero().flatten().tolist()
    spans = []
    for s in starts.nonzero().flatten().tolist():
        after = [e for e in end_positions if e >= s]
        if after:
            spans.append((s, after[0]))
    return spans


def pointer_decode(sub_start: Tensor, sub_end: Tensor, objects: Callable[[list[tuple[int, int]]], Tensor],
                   threshold: float = 0.0) -> list[Triple]:
    """Decode one sentence of ``W`` words.

    ``sub_start``/``sub_end`` ``[W]`` subject logits; ``objects(spans)`` returns object logits
    ``[len(spans), W, R, 2]`` for the given inclusive subject spans.
    """
    subjects = nearest_spans(sub_start > threshold, sub_end > threshold)
    if not subjects:
        return []
    logits = objects(subjects)  # shape: [N, W, R, 2]
    triples = []
    passed = logits > threshold  # shape: [N, W, R, 2]
    for (s0, s1), obj in zip(subjects, passed, strict=True):
        for r in obj[:, :, 0].any(0).nonzero().flatten().tolist():  # only relations with an object start
            for o0, o1 in nearest_spans(obj[:, r, 0], obj[:, r, 1]):
                triples.append(Triple(s0, s1, r, o0, o1))
    return sorted(set(triples))


# -- the GPLinker head ----------------------------------------------------------------------------------
class GlobalPointer(nn.Module):
    """Span scores ``[B, heads, W, W]`` (start x end) from word features ``[B, W, H]``.

    ``efficient``: Efficient GlobalPointer (one shared query/key projection, per-head biases);
    ``rope``: rotary position encoding of queries and keys (relative distance matters for spans).
    """

    def __init__(self, hidden: int, heads: int, size: int = 64, *, rope: bool = True, efficient: bool = False) -> None:
        super().__init__()
        if size % 2:
            raise ValueError(f"GlobalPointer size must be even (rotary pairs), got {size}")
        self.heads, self.size, self.rope, self.efficient = heads, size, rope, efficient
        self.qk = nn.Linear(hidden, 2 * size if efficient else 2 * size * heads)
        self.bias = nn.Linear(2 * size, 2 * heads) if efficient else None

    def forward(self, words: Tensor, mask: Tensor, *, lower_triangle: bool = False) -> Tensor:
        """Scores ``[B, heads, W, W]``; padding (and ``end < start`` with ``lower_triangle``) get ``NEG``."""
        batch, width, _ = words.shape
        proj = self.qk(words)  # shape: [B, W, 2 * size (* heads)]
        if self.efficient:
            q, k = proj[..., : self.size], proj[..., self.size :]  # shape: [B, W, size]
            if self.rope:
                q, k = rotary(q), rotary(k)
            scores = torch.einsum("bmd,bnd->bmn", q, k).unsqueeze(1) / math.sqrt(self.size)
            bias = self.bias(proj).view(batch, width, self.heads, 2) / 2  # shape: [B, W, heads, 2]
            scores = scores + bias[..., 0].transpose(1, 2).unsqueeze(-1) + bias[..., 1].transpose(1, 2).unsqueeze(-2)
        else:
            proj = proj.view(batch, width, self.heads, 2 * self.size)
            q, k = proj[..., : self.size], proj[..., self.size :]  # shape: [B, W, heads, size]
            if self.rope:
                q, k = rotary(q.transpose(1, 2)).transpose(1, 2), rotary(k.transpose(1, 2)).transpose(1, 2)
            scores = torch.einsum("bmhd,bnhd->bhmn", q, k) / math.sqrt(self.size)
        pair = (mask[:, :, None] & mask[:, None, :]).unsqueeze(1)  # shape: [B, 1, W, W]
        if lower_triangle:
            pair = pair & torch.ones(width, width, dtype=torch.bool, device=words.device).triu()
        return scores.masked_fill(~pair, NEG)


def rotary(x: Tensor) -> Tensor:
    """Rotary position encoding along the second-to-last dimension: ``[..., W, D]`` -> same."""
    width, dim = x.shape[-2], x.shape[-1]
    position = torch.arange(width, device=x.device, dtype=x.dtype)[:, None]  # shape: [W, 1]
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, device=x.device, dtype=x.dtype) / dim)  # shape: [D/2]
    angle = position * freq  # shape: [W, D/2]
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)  # shape: [W, D]
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + rotated * sin


class GPLinkerHead(nn.Module):
    """Entity spans (subject, object) and per-relation head/tail pairs, all GlobalPointers."""

    def __init__(self, hidden: int, num_relations: int, size: int = 64, efficient: bool = False) -> None:
        super().__init__()
        if hidden < 1 or num_relations < 1:
            raise ValueError(f"hidden and num_relations must be positive, got {hidden}, {num_relations}")
        self.num_relations = num_relations
        self.entity = GlobalPointer(hidden, 2, size, rope=True, efficient=efficient)
        self.head = GlobalPointer(hidden, num_relations, size, rope=False, efficient=efficient)
        self.tail = GlobalPointer(hidden, num_relations, size, rope=False, efficient=efficient)

    def scores(self, words: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Entity ``[B, 2, W, W]``, head-pair ``[B, R, W, W]`` and tail-pair ``[B, R, W, W]`` scores."""
        return (self.entity(words, mask, lower_triangle=True), self.head(words, mask), self.tail(words, mask))

    def loss(self, words: Tensor, mask: Tensor, gold: Sequence[Sequence[Triple]]) -> Tensor:
        """ZLPR losses of the three pointers, summed over their heads, averaged over sentences."""
        entity, head, tail = self.scores(words, mask)
        ent_y, head_y, tail_y = (torch.zeros_like(s) for s in (entity, head, tail))
        for b, triples in enumerate(gold):
            for t in triples:
                ent_y[b, 0, t.s_start, t.s_end] = 1
                ent_y[b, 1, t.o_start, t.o_end] = 1
                head_y[b, t.relation, t.s_start, t.o_start] = 1
                tail_y[b, t.relation, t.s_end, t.o_end] = 1
        total = words.new_zeros(())
        for s, y in ((entity, ent_y), (head, head_y), (tail, tail_y)):
            total = total + zlpr_loss(s.flatten(2), y.flatten(2)).sum(1).mean()  # sum heads, mean batch
        return total

    @torch.no_grad()
    def decode(self, words: Tensor, lengths: Sequence[int], threshold: float = 0.0) -> list[list[Triple]]:
        positions = torch.arange(words.shape[1], device=words.device)
        mask = positions[None, :] < torch.tensor(lengths, device=words.device)[:, None]  # shape: [B, W]
        entity, head, tail = self.scores(words, mask)
        return [gplinker_decode(entity[b], head[b], tail[b], threshold) for b in range(words.shape[0])]


def gplinker_decode(entity: Tensor, head: Tensor, tail: Tensor, threshold: float = 0.0) -> list[Triple]:
    """Decode one sentence: ``entity`` ``[2, W, W]``, ``head``/``tail`` ``[R, W, W]`` scores.

    A triple needs a subject span, an object span, and both its head pair and tail pair above
    ``threshold`` for the same relation.
    """
    subjects = (entity[0] > threshold).nonzero().tolist()
    objects = (entity[1] > threshold).nonzero().tolist()
    triples = []
    for s0, s1 in subjects:
        for o0, o1 in objects:
            both = (head[:, s0, o0] > threshold) & (tail[:, s1, o1] > threshold)  # shape: [R]
            triples.extend(Triple(s0, s1, r, o0, o1) for r in both.nonzero().flatten().tolist())
    return sorted(triples)


def build_head(kind: str, hidden: int, num_relations: int, **config) -> nn.Module:
    """``pointer`` or ``gplinker`` (``size``, ``efficient`` apply to gplinker only)."""
    if kind == "pointer":
        if config:
            raise ValueError(f"the pointer head takes no options, got {sorted(config)}")
        return PointerHead(hidden, num_relations)
    if kind == "gplinker":
        return GPLinkerHead(hidden, num_relations, **config)
    raise ValueError(f"unknown triple head {kind!r}; expected one of {', '.join(HEADS)}")
