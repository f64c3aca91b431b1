"""CRF and the chain algorithms against a brute-force oracle that enumerates every tag sequence."""

from __future__ import annotations

import itertools

import pytest
import torch

from tagpipe.corpora.schemes import allowed_transitions, is_valid
from tagpipe.plugins.decoders import chain, forward_backward, viterbi
from tagpipe.plugins.decoders.crf import CRF, CRFDecoder

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES = ["O", "B-X", "I-X", "E-X", "S-X"]


def random_batch(seed: int, batch: int = 4, seq: int = 5, tags: int = 4, dtype=torch.float64):
    """Emissions, tags and a prefix mask with variable lengths (one row full, one of length 1)."""
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq, tags, generator=gen, dtype=dtype)
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = seq, 1
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    tags_ = torch.randint(0, tags, (batch, seq), generator=gen).masked_fill(~mask, -1)
    return emissions, tags_, mask


def make_crf(num_tags: int, seed: int, constraints=None, scale: float = 1.0) -> CRF:
    crf = CRF(num_tags, constraints).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (crf.transitions, crf.start_transitions, crf.end_transitions):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return crf


def brute_force(crf: CRF, emissions, mask):
    """Per row: {sequence: score} over every sequence the constraints allow (all if none)."""
    trans, start, end = (t.detach().tolist() for t in crf.scores(hard=True))
    out = []
    for b, em in enumerate(emissions.tolist()):
        n = int(mask[b].sum())
        scores = {}
        for seq in itertools.product(range(crf.num_tags), repeat=n):
            s = start[seq[0]] + end[seq[-1]] + sum(em[t][y] for t, y in enumerate(seq))
            s += sum(trans[a][c] for a, c in itertools.pairwise(seq))
            if s > float("-inf"):
                scores[seq] = s
        out.append(scores)
    return out


CASES = [(seed, c, None) for seed, c in zip(range(6), [3, 4, 5, 3, 4, 5], strict=True)] + [
    (10, 5, "iob2"),
    (11, 5, "bioes"),
    (12, 5, "bioes"),
]


def constraints_for(scheme):
    if scheme is None:
        return None
    return allowed_transitions(IOB2 if scheme == "iob2" else BIOES, scheme)


@pytest.mark.parametrize(("seed", "num_tags", "scheme"), CASES)
def test_nll_decode_marginals_match_brute_force(seed, num_tags, scheme):
    crf = make_crf(num_tags, seed, constraints_for(scheme))
    emissions, tags, mask = random_batch(seed, tags=num_tags)
    oracle = brute_force(crf, emissions, mask)
    nll = crf.nll(emissions, tags, mask)
    paths = crf.decode(emissions, mask)
    marg = crf.marginals(emissions, mask)
    for b, scores in enumerate(oracle):
        n = int(mask[b].sum())
        log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
        gold = tuple(tags[b, :n].tolist())
        if gold in scores:
            torch.testing.assert_close(nll[b], log_z - scores[gold])
        else:  # a forbidden gold sequence: huge but finite loss
            assert 1e3 < nll[b] < float("inf")
        assert tuple(paths[b, :n].tolist()) == max(scores, key=scores.get)
        assert (paths[b, n:] == -1).all()
        expected = torch.zeros(n, num_tags, dtype=torch.float64)
        for seq, s in scores.items():
            expected[torch.arange(n), torch.tensor(seq)] += torch.exp(torch.tensor(s) - log_z)
        torch.testing.assert_close(marg[b, :n], expected)
        assert (marg[b, n:] == 0).all()


def test_matches_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    ours = make_crf(5, 0)
    theirs = torchcrf.CRF(5, batch_first=True).double()
    theirs.load_state_dict(ours.state_dict())
    emissions, tags, mask = random_batch(1, batch=8, seq=12, tags=5)
    torch.testing.assert_close(ours.nll(emissions, tags, mask), -theirs(emissions, tags.clamp_min(0), mask, "none"))
    paths = ours.decode(emissions, mask)
    assert [row[row >= 0].tolist() for row in paths] == theirs.decode(emissions, mask)


@pytest.mark.parametrize("method", ["loop", "scan"])
def test_methods_agree_on_long_sequences(method):
    gen = torch.Generator().manual_seed(3)
    batch, seq, c = 6, 70, 4
    emissions = torch.randn(batch, seq, c, generator=gen, dtype=torch.float64)
    mask = torch.arange(seq)[None, :] < torch.tensor([70, 64, 65, 1, 2, 33])[:, None]
    trans, start, end = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((c, c), (c,), (c,)))
    trans[0, 1] = float("-inf")
    paths = viterbi.viterbi_decode(emissions, mask, trans, start, end, method)
    ref = torchcrf_like_decode(emissions, mask, trans, start, end)
    assert torch.equal(paths, ref)
    finite = trans.clamp_min(-1e4)
    other = "scan" if method == "loop" else "loop"
    for fn in (forward_backward.log_partition, forward_backward.marginals):
        torch.testing.assert_close(
            fn(emissions, mask, finite, start, end, method), fn(emissions, mask, finite, start, end, other)
        )


def meet_batch(seed: int, batch: int, seq: int, tags: int, dtype=torch.float64):
    """Random emissions and a prefix mask whose lengths include 1, 2 and ``seq``."""
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq, tags, generator=gen, dtype=dtype)
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    lengths[:3] = torch.tensor([seq, 1, 2])
    return emissions, torch.arange(seq)[None, :] < lengths[:, None]


@pytest.mark.parametrize("seq", [2, 3, 6, 7])
@pytest.mark.parametrize(
    ("seed", "num_tags", "scheme"), [(20, 3, None), (21, 4, None), (22, 5, "iob2"), (23, 5, "bioes")]
)
def test_meet_matches_brute_force(seq, seed, num_tags, scheme):
    if num_tags**seq > 20_000:
        seq -= 2  # keeps the oracle fast; still one odd and one even length
    crf = make_crf(num_tags, seed, constraints_for(scheme))
    emissions, mask = meet_batch(seed, 6, seq, num_tags)
    trans, start, end = crf.scores(hard=True)
    paths = viterbi.viterbi_decode(emissions, mask, trans, start, end, "meet")
    for b, scores in enumerate(brute_force(crf, emissions, mask)):
        n = int(mask[b].sum())
        best = max(scores, key=scores.get)
        assert tuple(paths[b, :n].tolist()) == best
        assert scores[tuple(paths[b, :n].tolist())] == scores[best]
        assert (paths[b, n:] == -1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("batch", "seq", "num_tags", "scheme"), [(64, 40, 17, None), (33, 37, 5, "bioes"), (16, 129, 9, "iob2")]
)
def test_meet_equals_loop(dtype, batch, seq, num_tags, scheme):
    labels = {"bioes": BIOES, "iob2": IOB2}.get(scheme)
    constraints = allowed_transitions(labels, scheme) if scheme else None
    crf = make_crf(num_tags if labels is None else len(labels), batch, constraints)
    emissions, mask = meet_batch(batch, batch, seq, crf.num_tags, dtype)
    trans, start, end = (t.to(dtype) for t in crf.scores(hard=True))
    loop = viterbi.viterbi_decode(emissions, mask, trans, start, end, "loop")
    assert torch.equal(viterbi.viterbi_decode(emissions, mask, trans, start, end, "meet"), loop)
    # per-step transitions [B, T, C, C], as MEMMs give them
    steps = trans + 0.5 * torch.randn(batch, seq, *trans.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    loop = viterbi.viterbi_decode(emissions, mask, steps, start, end, "loop")
    assert torch.equal(viterbi.viterbi_decode(emissions, mask, steps, start, end, "meet"), loop)


@pytest.mark.parametrize(("labels", "scheme"), [(IOB2, "iob2"), (BIOES, "bioes")])
def test_meet_with_ties_gives_a_valid_optimal_path(labels, scheme):
    """All-zero scores (every valid path ties, as right after zero init) and ties between
    two tags: the path must still be valid and optimal."""
    crf = CRF(len(labels), allowed_transitions(labels, scheme))
    for param in (crf.transitions, crf.start_transitions, crf.end_transitions):
        torch.nn.init.zeros_(param)
    emissions, mask = meet_batch(0, 16, 30, len(labels), torch.float32)
    emissions[:8] = 0.0
    emissions[8:, :, 2] = emissions[8:, :, 1]  # B- and I- of the same type always tie
    trans, start, end = crf.scores(hard=True)
    paths = viterbi.viterbi_decode(emissions, mask, trans, start, end, "meet")
    loop = viterbi.viterbi_decode(emissions, mask, trans, start, end, "loop")
    tags = (paths.clamp(min=0), loop.clamp(min=0))
    ours, best = (chain.sequence_score(emissions, t, mask, trans, start, end) for t in tags)
    torch.testing.assert_close(ours, best, rtol=0, atol=1e-5)
    for row in paths:
        assert is_valid([labels[i] for i in row[row >= 0]], scheme)


def test_auto_meets_in_the_middle_for_long_batches():
    emissions = torch.zeros(32, 40, 17)
    assert chain.choose_method("auto", emissions, decoding=True) == "meet"
    assert chain.choose_method("auto", emissions, decoding=True, per_step=True) == "loop"
    assert chain.choose_method("auto", emissions[:, :8], decoding=True) == "loop"
    mask, zeros = torch.ones(32, 40, dtype=torch.bool), torch.zeros(17)
    with pytest.raises(ValueError, match="'meet' is for Viterbi decoding only"):
        forward_backward.log_partition(emissions, mask, torch.zeros(17, 17), zeros, zeros, "meet")


def test_marginals_under_inference_mode():
    crf = make_crf(4, 7)
    emissions, _, mask = random_batch(7)
    expected = crf.marginals(emissions, mask)
    with torch.inference_mode():
        torch.testing.assert_close(crf.marginals(emissions, mask), expected)


def test_marginals_scaled_recursion_is_exact_and_survives_extreme_scores():
    """The probability-space recursion matches float64 log space; scores far beyond float32's
    exponent range (every path of a step underflows) take the log-space path, not NaN."""
    torch.manual_seed(3)
    emissions = torch.randn(6, 30, 9) * 5
    lengths = torch.tensor([30, 1, 2, 17, 29, 8])
    mask = torch.arange(30)[None] < lengths[:, None]
    trans, start, end = torch.randn(9, 9) * 3, torch.randn(9), torch.randn(9)
    trans[0, 3] = trans[4, 1] = float("-inf")
    exact = forward_backward._log_forward_backward(emissions.double(), mask, trans.double(), start.double(),
                                                   end.double())
    torch.testing.assert_close(forward_backward.marginals(emissions, mask, trans, start, end, "loop").double(), exact,
                               atol=2e-6, rtol=0)
    huge = emissions * 400
    probs = forward_backward.marginals(huge, mask, trans, start, end, "loop")
    assert not torch.isfinite(forward_backward._scaled_forward_backward(huge, mask, trans, start, end)).all()
    torch.testing.assert_close(probs, forward_backward._log_forward_backward(huge, mask, trans, start, end))


def torchcrf_like_decode(emissions, mask, trans, start, end):
    """A textbook Viterbi in plain Python, one row at a time."""
    out = torch.full(mask.shape, -1)
    trans, start, end = trans.tolist(), start.tolist(), end.tolist()
    tags = range(len(start))
    for b, em in enumerate(emissions.tolist()):
        n = int(mask[b].sum())
        score, back = [start[j] + em[0][j] for j in tags], []
        for t in range(1, n):
            idx = [max(tags, key=lambda i, j=j: score[i] + trans[i][j]) for j in tags]
            score = [score[idx[j]] + trans[idx[j]][j] + em[t][j] for j in tags]
            back.append(idx)
        best = [max(tags, key=lambda j: score[j] + end[j])]
        for idx in reversed(back):
            best.append(idx[best[-1]])
        out[b, :n] = torch.tensor(best[::-1])
    return out


@pytest.mark.parametrize(("labels", "scheme"), [(IOB2, "iob2"), (BIOES, "bioes")])
def test_constraints_hold_right_after_init(labels, scheme):
    torch.manual_seed(0)
    crf = CRF(len(labels), allowed_transitions(labels, scheme))
    emissions = torch.randn(32, 9, len(labels)) * 5
    mask = torch.arange(9)[None, :] < torch.randint(1, 10, (32,))[:, None]
    mask[:, 0] = True
    for row in crf.decode(emissions, mask):
        assert is_valid([labels[i] for i in row[row >= 0]], scheme)


def test_gradients_finite_with_constraints():
    crf = CRF(5, allowed_transitions(BIOES, "bioes"))
    emissions, tags, mask = random_batch(4, tags=5, dtype=torch.float32)
    emissions.requires_grad_(True)
    crf.nll(emissions, tags, mask).sum().backward()
    assert torch.isfinite(emissions.grad).all() and torch.isfinite(crf.transitions.grad).all()
    # forbidden transitions get no gradient: they stay forbidden
    assert (crf.transitions.grad[~crf.allowed_transitions] == 0).all()


def test_dtypes():
    crf = CRF(3)
    emissions, tags, mask = random_batch(5, tags=3, dtype=torch.float32)
    assert crf.nll(emissions.bfloat16(), tags, mask).dtype == torch.float32
    assert crf.double().nll(emissions.double(), tags, mask).dtype == torch.float64
    assert crf.decode(emissions.bfloat16(), mask).dtype == torch.long


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: CRF(0), "num_tags must be a positive int"),
        (lambda: CRF(True), "num_tags must be a positive int"),
        (lambda: CRF(4, allowed_transitions(IOB2, "iob2")), "constraints are for 5 tags"),
        (lambda: CRF(3).decode(torch.randn(2, 3, 4)), "expected 3 tags"),
        (lambda: CRF(3).decode(torch.randn(2, 3)), "3 dimensions"),
        (lambda: CRF(3).decode(torch.randn(2, 0, 3)), "sequence length 0"),
        (lambda: CRF(3).decode(torch.randn(2, 3, 3), torch.tensor([[1, 1, 0]] * 2)), "bool"),
        (lambda: CRF(3).decode(torch.randn(2, 3, 3), torch.tensor([[True] * 3, [False] * 3])), r"mask\[:, 0\]"),
        (lambda: CRF(3).nll(torch.randn(1, 2, 3), torch.tensor([[0, 3]]), None), r"tags must lie in \[0, 3\)"),
        (lambda: CRFDecoder(8, 3, dropout=0.1), "unknown crf decoder config key"),
        (lambda: CRFDecoder(0, 3), "input_dim must be a positive int"),
    ],
)
def test_precise_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
