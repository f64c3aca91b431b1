"""Maximum spanning dependency trees from a score matrix, and the chain baselines.

Convention everywhere here: ``scores`` is ``[n + 1, n + 1]`` with ``scores[h, d]`` the score
of the arc head ``h`` -> dependent ``d``; index 0 is the artificial root and 1..n are the
words. The diagonal and column 0 are ignored. A tree is returned as ``heads`` (length
``n + 1``, ``heads[0] = -1``, ``heads[d]`` in ``0..n``) with exactly one word attached to the
root (the single-root constraint of UD). Trees maximise the sum of their arc scores.
"""

from __future__ import annotations

import numpy as np

NEG = -np.inf


def _as_scores(scores) -> np.ndarray:
    s = np.array(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 2:
        raise ValueError(f"scores must be [n + 1, n + 1] with n >= 1, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s


def tree_score(scores, heads) -> float:
    """The sum of the arc scores of ``heads``."""
    s = np.asarray(scores, dtype=np.float64)
    return float(sum(s[h, d] for d, h in enumerate(heads) if d > 0))


def eisner(scores) -> list[int]:
    """The best projective single-root tree, O(n^3) (Eisner 1996).

    The chart covers the words 1..n only; the root then takes the one word ``r`` whose left
    and right complete spans together with ``scores[0, r]`` score best, which is how the
    single-root constraint enters.
    """
    s = _as_scores(scores)
    n = s.shape[0] - 1
    w = s[1:, 1:]  # w[h, d] for words 0..n-1
    # complete[i, j, dir] / incomplete[i, j, dir]; dir 0 = head on the right (j), 1 = on the left (i)
    comp = np.full((n, n, 2), NEG)
    inc = np.full((n, n, 2), NEG)
    comp_bp = np.zeros((n, n, 2), dtype=np.int64)
    inc_bp = np.zeros((n, n, 2), dtype=np.int64)
    for i in range(n):
        comp[i, i] = 0.0
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            # incomplete: an arc between i and j over a split i <= k < j
            split = comp[i, i:j, 1] + comp[i + 1 : j + 1, j, 0]  # [j - i]
            k = int(np.argmax(split))
            inc[i, j, 0] = split[k] + w[j, i]
            inc[i, j, 1] = split[k] + w[i, j]
            inc_bp[i, j, :] = i + k
            # complete, head j: comp[i, k, 0] + inc[k, j, 0] for i <= k < j
            left = comp[i, i:j, 0] + inc[i:j, j, 0]
            k = int(np.argmax(left))
            comp[i, j, 0], comp_bp[i, j, 0] = left[k], i + k
            # complete, head i: inc[i, k, 1] + comp[k, j, 1] for i < k <= j
            right = inc[i, i + 1 : j + 1, 1] + comp[i + 1 : j + 1, j, 1]
            k = int(np.argmax(right))
            comp[i, j, 1], comp_bp[i, j, 1] = right[k], i + 1 + k
    root_scores = comp[0, :, 0] + comp[:, n - 1, 1] + s[0, 1:]  # [n]
    r = int(np.argmax(root_scores))
    heads = [-1] * (n + 1)
    heads[r + 1] = 0

    def complete(i: int, j: int, d: int) -> None:
        if i == j:
            return
        k = comp_bp[i, j, d]
        if d == 0:
            complete(i, k, 0)
            incomplete(k, j, 0)
        else:
            incomplete(i, k, 1)
            complete(k, j, 1)

    def incomplete(i: int, j: int, d: int) -> None:
        if d == 0:
            heads[i + 1] = j + 1
        else:
            heads[j + 1] = i + 1
        k = inc_bp[i, j, d]
        complete(i, k, 1)
        complete(k + 1, j, 0)

    complete(0, r, 0)
    complete(r, n - 1, 1)
    return heads


def chu_liu_edmonds(scores) -> list[int]:
    """The best single-root spanning arborescence, projective or not (Chu-Liu/Edmonds).

    The single-root constraint: every root arc is penalised by a constant larger than any
    two trees can differ by, so the best arborescence has exactly one root arc and, among
    those, is the best (every arborescence has at least one).
    """
    s = _as_scores(scores)
    n = s.shape[0] - 1
    # larger than n arcs can differ by: n * (max - min) <= n * 2 * max|s|
    s[0, 1:] -= 1.0 + 2.0 * (n + 1) * (2.0 * float(np.abs(s).max()) + 1.0)
    np.fill_diagonal(s, NEG)
    s[:, 0] = NEG
    heads = _cle(s)
    return [-1] + [int(h) for h in heads[1:]]


def _cle(s: np.ndarray) -> np.ndarray:
    """Maximum arborescence rooted at 0 of ``s[h, d]`` (``-inf`` = no arc); ``heads[0]`` unused."""
    m = s.shape[0]
    heads = np.argmax(s, axis=0)
    heads[0] = 0
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    in_cycle = np.zeros(m, dtype=bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)  # node 0 is never in a cycle
    cycle_arr = np.array(cycle)
    # contracted graph: nodes = rest (same order) + one node c for the cycle
    c = len(rest)
    t = np.full((c + 1, c + 1), NEG)
    t[:c, :c] = s[np.ix_(rest, rest)]
    # arcs into the cycle: entering v replaces v's cycle arc
    gain = s[np.ix_(rest, cycle_arr)] - s[heads[cycle_arr], cycle_arr]  # [c, |cycle|]
    enter = np.argmax(gain, axis=1)
    t[:c, c] = gain[np.arange(c), enter]
    # arcs out of the cycle: from its best member
    out = s[np.ix_(cycle_arr, rest)]  # [|cycle|, c]
    leave = np.argmax(out, axis=0)
    t[c, :c] = out[leave, np.arange(c)]
    sub = _cle(t)
    result = heads.copy()
    for k, node in enumerate(rest):
        if node == 0:
            continue
        h = sub[k]
        result[node] = cycle_arr[leave[k]] if h == c else rest[h]
    h = sub[c]
    entered = cycle_arr[enter[h]]
    result[entered] = rest[h]
    return result


def _find_cycle(heads: np.ndarray) -> list[int] | None:
    m = len(heads)
    color = np.zeros(m, dtype=np.int8)  # 0 new, 1 on the current path, 2 done
    color[0] = 2
    for start in range(1, m):
        path = []
        node = start
        while color[node] == 0:
            color[node] = 1
            path.append(node)
            node = int(heads[node])
        if color[node] == 1:
            return path[path.index(node) :]
        for p in path:
            color[p] = 2
    return None


def left_chain(n: int, root: int | None = None) -> list[int]:
    """Every word headed by its left neighbour; the first word (or ``root``) takes the root.

    With a given ``root`` (1-based) the chain stops there: the words right of it keep their
    left neighbours and the first word attaches to the root word.
    """
    root = 1 if root is None else root
    heads = [-1] + [d - 1 for d in range(1, n + 1)]
    heads[root] = 0
    if root > 1:
        heads[1] = root
    return heads


def right_chain(n: int, root: int | None = None) -> list[int]:
    """Every word headed by its right neighbour; the last word (or ``root``) takes the root.

    With a given ``root`` (1-based) the words left of it keep their right neighbours and
    the last word attaches to the root word.
    """
    root = n if root is None else root
    heads = [-1] + [d + 1 for d in range(1, n + 1)]
    heads[root] = 0
    if root < n:
        heads[n] = root
    return heads


def is_tree(heads) -> bool:
    """Whether ``heads`` is a single-root tree over words 1..n."""
    n = len(heads) - 1
    if sum(1 for h in heads[1:] if h == 0) != 1:
        return False
    for d in range(1, n + 1):
        seen = set()
        node = d
        while node != 0:
            if node in seen or not 0 <= heads[node] <= n or heads[node] == node:
                return False
            seen.add(node)
            node = heads[node]
    return True


def is_projective(heads) -> bool:
    """Whether no two arcs of ``heads`` cross (the root arc included)."""
    arcs = [(min(h, d), max(h, d)) for d, h in enumerate(heads) if d > 0]
    for a, b in arcs:
        for c, e in arcs:
            if a < c < b < e:
                return False
    return True
