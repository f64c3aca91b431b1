"""Decoding exported tag scores in numpy (torch-free): argmax, and Viterbi with the model's transitions.

The exported folders carry what the decoders add to the per-token scores as JSON: ``transitions``
``[C, C]`` (``transitions[i][j]`` scores tag ``i`` followed by ``j``), ``start`` and ``end`` ``[C]``,
with ``null`` where the tagging scheme forbids a transition (BIOES: ``B-X`` never followed by ``O``),
read back as ``-inf``. A sequence ``y_0 .. y_{n-1}`` scores::

    start[y_0] + sum_t scores[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{n-1}]

as in :mod:`tagpipe.plugins.decoders.chain`; an MEMM's transitions differ at each step
(``[B, T, C, C]``, entry ``t`` scoring ``y_{t-1} -> y_t``) and are added to the static ones. Ties
go to the lowest tag id, as in torch's Viterbi, so both pick the same path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_json(values: np.ndarray) -> list:
    """A float array as nested lists, ``-inf`` as ``None`` (JSON has no infinity)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        return None if np.isneginf(array) else float(array)  # type: ignore[return-value]
    return [to_json(row) for row in array]


def from_json(values: Sequence) -> np.ndarray:
    """The inverse of :func:`to_json`: nested lists with ``None`` as a float32 array with ``-inf``."""
    array = np.array(values, dtype=object)
    return np.where(array == None, -np.inf, array).astype(np.float32)  # noqa: E711 - element-wise


def argmax(scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The best tag of each token ``[B, T]``, ``-1`` past each row's length."""
    best = scores.argmax(-1)
    return np.where(np.arange(scores.shape[1])[None, :] < lengths[:, None], best, -1)


def viterbi(scores: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray,
            end: np.ndarray) -> np.ndarray:
    """The best tag sequence of each row ``[B, T]`` (``-1`` past its length).

    ``scores`` ``[B, T, C]``; ``lengths`` ``[B]``, each at least 1; ``transitions`` ``[C, C]`` or per step
    ``[B, T, C, C]``; ``start``/``end`` ``[C]``. Computed in float32 as torch does.
    """
    scores = scores.astype(np.float32, copy=False)
    batch, seq, _ = scores.shape
    rows = np.arange(batch)
    best = start[None, :] + scores[:, 0]  # shape: [B, C]
    pointers = np.zeros((max(seq - 1, 0), batch, scores.shape[2]), dtype=np.int64)  # shape: [T-1, B, C]
    final = best.copy()  # each row's scores at its last position
    for t in range(1, seq):
        step = transitions if transitions.ndim == 2 else transitions[:, t]  # shape: [C, C] or [B, C, C]
        # shape: [B, C_prev, C_next]; the emission is added to the transition first, as torch does
        candidates = (step + scores[:, t, None, :]) + best[:, :, None]
        pointers[t - 1] = candidates.argmax(1)
        best = np.take_along_axis(candidates, pointers[t - 1][:, None, :], 1)[:, 0]
        last = lengths - 1 == t
        final[last] = best[last]
    tags = np.full((batch, seq), -1, dtype=np.int64)
    current = (final + end[None, :]).argmax(1)  # shape: [B]
    for t in range(seq - 1, -1, -1):
        inside = t < lengths
        tags[inside, t] = current[inside]
        if t:
            # a row whose last position is below t keeps its tag until it reaches it
            current = np.where(t <= lengths - 1, pointers[t - 1][rows, current], current)
    return tags
