"""Perturbed Masking's protocol: from an impact matrix to a tree, how trees are scored, and
word segmentation from the impacts between adjacent units.

Plain functions of matrices (:mod:`tagpipe.plugins.perturbed_masking.masking` computes them), so they are tested
and reused without a model: the choices that change UAS (orientation, root, punctuation) are
named options here, stated in every report.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tagpipe.errors import TagpipeError
from tagpipe.plugins.perturbed_masking.names import ALGORITHMS, ORIENTATIONS, ROOTS

if TYPE_CHECKING:
    from torch import Tensor


class OptionError(TagpipeError, ValueError):
    """An option outside its allowed values (a layer the model lacks, an unknown distance)."""



def arc_scores(
    matrix: Tensor | np.ndarray, orientation: str = "paper", root: str = "cls", gold_root: int | None = None
) -> np.ndarray:
    """``scores[h, d]`` (root 0, words 1..n) for :mod:`tagpipe.plugins.perturbed_masking.trees` from a matrix.

    ``paper``: ``scores[h, d] = F[d, h]``, a head is the word whose masking moves its
    dependent most (the paper's code transposes its matrix before Eisner); ``transposed``:
    ``scores[h, d] = F[h, d]``. Root arcs ``scores[0, d]``: ``cls`` = ``F[0, d]``, the impact of
    word d on ``[CLS]``; ``matrix`` = d's mean score as the head of the other words.
    ``gold_root`` (1-based, an evaluation protocol) forces that word to be the root.
    """
    if orientation not in ORIENTATIONS:
        raise OptionError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")
    if root not in ROOTS:
        raise OptionError(f"unknown root choice {root!r}; expected one of {ROOTS}")
    f = np.asarray(matrix, dtype=np.float64)
    n = f.shape[0] - 1
    scores = f.T.copy() if orientation == "paper" else f.copy()
    np.fill_diagonal(scores, 0.0)
    if root == "cls":
        scores[0, 1:] = f[0, 1:]
    else:
        scores[0, 1:] = scores[1:, 1:].sum(1) / max(n - 1, 1)
    if gold_root is not None:
        big = 1.0 + 2.0 * (n + 1) * (float(np.abs(scores).max()) + 1.0)
        scores[0, 1:] = 0.0
        scores[0, gold_root] = big
    return scores


def parse_matrix(
    matrix: Tensor | np.ndarray,
    algorithm: str = "eisner",
    orientation: str = "paper",
    root: str = "cls",
    gold_root: int | None = None,
) -> list[int]:
    """Heads (``heads[0] = -1``, 1-based, 0 = root) of the best tree read off ``matrix``."""
    from tagpipe.plugins.perturbed_masking.trees import chu_liu_edmonds, eisner

    if algorithm not in ALGORITHMS:
        raise OptionError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if len(matrix) == 2:  # one word: it is the root
        return [-1, 0]
    scores = arc_scores(matrix, orientation, root, gold_root)
    return (eisner if algorithm == "eisner" else chu_liu_edmonds)(scores)


def is_punct(token: str, upos: str | None) -> bool:
    """UD's PUNCT tag; without tags, a token made only of Unicode punctuation."""
    if upos is not None:
        return upos == "PUNCT"
    return bool(token) and all(unicodedata.category(c).startswith("P") for c in token)


@dataclass
class Attachment:
    """Correct heads over all tokens and over non-punctuation tokens (root attachments included)."""

    correct: int = 0
    total: int = 0
    correct_no_punct: int = 0
    total_no_punct: int = 0

    def add(self, pred: Sequence[int], gold: Sequence[int], punct: Sequence[bool]) -> None:
        """``pred``/``gold``: 1-based heads per token (no leading -1)."""
        for p, g, is_p in zip(pred, gold, punct, strict=True):
            self.correct += p == g
            self.total += 1
            if not is_p:
                self.correct_no_punct += p == g
                self.total_no_punct += 1

    @property
    def uas(self) -> float:
        """Percent, punctuation excluded."""
        return 100.0 * self.correct_no_punct / max(self.total_no_punct, 1)

    @property
    def uas_with_punct(self) -> float:
        return 100.0 * self.correct / max(self.total, 1)


# -- segmentation: a boundary where adjacent units barely affect each other ----------------------


def boundary_scores(impacts: Tensor) -> np.ndarray:
    """Per gap between units k and k+1, the mean of ``F[k, k+1]`` and ``F[k+1, k]`` ``[m - 1]``."""
    return np.asarray(impacts, dtype=np.float64).mean(0)


def split_units(units: Sequence[str], scores: np.ndarray, threshold: float | None = None) -> list[str]:
    """Join ``units`` (characters) into words, cutting where the score is below ``threshold``.

    ``threshold=None`` uses the sentence's mean score, so the cut adapts to each model's scale.
    """
    if not units:
        return []
    cut = float(np.mean(scores)) if threshold is None and len(scores) else threshold
    words, current = [], units[0]
    for unit, score in zip(units[1:], scores, strict=True):
        if cut is not None and score < cut:
            words.append(current)
            current = unit
        else:
            current += unit
    words.append(current)
    return words


def word_spans_of(words: Sequence[str]) -> set[tuple[int, int]]:
    """Character spans ``(start, end)`` of consecutive words."""
    spans, start = set(), 0
    for w in words:
        spans.add((start, start + len(w)))
        start += len(w)
    return spans


def segmentation_counts(pred: Sequence[str], gold: Sequence[str]) -> tuple[int, int, int]:
    """``(correct, predicted, gold)`` words; a word is correct when its character span matches."""
    p, g = word_spans_of(pred), word_spans_of(gold)
    return len(p & g), len(p), len(g)
