"""Eisner and Chu-Liu/Edmonds against brute force over every single-root tree."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tagpipe.plugins.perturbed_masking.trees import (
    chu_liu_edmonds,
    eisner,
    is_projective,
    is_tree,
    left_chain,
    right_chain,
    tree_score,
)


def all_trees(n: int, projective: bool):
    """Every single-root head assignment over n words (the oracle)."""
    for choice in itertools.product(range(n + 1), repeat=n):
        heads = [-1, *choice]
        if is_tree(heads) and (not projective or is_projective(heads)):
            yield heads


def brute_force(scores: np.ndarray, projective: bool) -> tuple[float, list[int]]:
    n = scores.shape[0] - 1
    return max((tree_score(scores, h), h) for h in all_trees(n, projective))


def test_tree_counts_match_known_numbers():
    # single-root labelled trees: n^(n-2) * ... ; known: 1, 2, 9, 64, 625 for n = 1..5
    assert [sum(1 for _ in all_trees(n, False)) for n in range(1, 6)] == [1, 2, 9, 64, 625]
    # projective single-root trees: 1, 2, 7, 30, 143
    assert [sum(1 for _ in all_trees(n, True)) for n in range(1, 6)] == [1, 2, 7, 30, 143]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_eisner_equals_brute_force(n):
    rng = np.random.default_rng(n)
    for _ in range(15):
        scores = rng.normal(size=(n + 1, n + 1))
        best, best_heads = brute_force(scores, projective=True)
        heads = eisner(scores)
        assert is_tree(heads) and is_projective(heads)
        assert tree_score(scores, heads) == pytest.approx(best)
        assert heads == best_heads  # continuous random scores: the optimum is unique


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_chu_liu_edmonds_equals_brute_force(n):
    rng = np.random.default_rng(100 + n)
    for _ in range(15):
        scores = rng.normal(size=(n + 1, n + 1)) * rng.uniform(0.1, 100)
        best, best_heads = brute_force(scores, projective=False)
        heads = chu_liu_edmonds(scores)
        assert is_tree(heads)
        assert tree_score(scores, heads) == pytest.approx(best)
        assert heads == best_heads


def test_single_root_is_enforced_when_root_arcs_dominate():
    n = 5
    scores = np.zeros((n + 1, n + 1))
    scores[0, 1:] = 10.0  # every word would rather attach to the root
    for decode in (eisner, chu_liu_edmonds):
        heads = decode(scores)
        assert is_tree(heads) and heads.count(0) == 1


def test_cle_finds_non_projective_tree():
    # 1 -> 3 and 2 -> 4 cross; make them overwhelmingly good
    scores = np.zeros((5, 5))
    scores[0, 1] = 5
    scores[1, 3] = 10
    scores[3, 2] = 10
    scores[2, 4] = 10
    heads = chu_liu_edmonds(scores)
    assert heads == [-1, 0, 3, 1, 2]
    assert not is_projective(heads)
    assert is_projective(eisner(scores))


def test_chains():
    assert left_chain(4) == [-1, 0, 1, 2, 3]
    assert right_chain(4) == [-1, 2, 3, 4, 0]
    assert left_chain(4, root=3) == [-1, 3, 1, 0, 3]
    assert right_chain(4, root=2) == [-1, 2, 0, 4, 2]
    for n in range(1, 7):
        for root in [None, *range(1, n + 1)]:
            for heads in (left_chain(n, root), right_chain(n, root)):
                assert is_tree(heads) and is_projective(heads)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="shape"):
        eisner(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="finite"):
        chu_liu_edmonds(np.array([[0.0, np.nan], [0.0, 0.0]]))
