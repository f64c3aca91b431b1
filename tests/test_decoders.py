"""The builtin decoders: one contract test class run over all of them, and brute-force oracles
for the softmax, MEMM and BiMEMM decoders (the CRF's are in test_decoders_crf.py)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from tagpipe import host as plugins
from tagpipe.corpora.schemes import allowed_transitions, is_valid
from tagpipe.plugins.decoders.memm import BiMEMMDecoder, MEMMDecoder
from tagpipe.plugins.decoders.softmax import SoftmaxDecoder

BUILTIN = ["tagpipe.softmax.v1", "tagpipe.crf.v1", "tagpipe.memm.v1", "tagpipe.bimemm.v1"]
BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
IOB2 = ["O", "B-X", "I-X", "B-Y", "I-Y"]
DIM = 8


def batch(seed: int, tags: int, size: int = 5, seq: int = 6, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(size, seq, DIM, generator=gen, dtype=dtype)
    lengths = torch.randint(1, seq + 1, (size,), generator=gen)
    lengths[0], lengths[-1] = seq, 1
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    gold = torch.randint(0, tags, (size, seq), generator=gen).masked_fill(~mask, -1)
    return features, gold, mask


def randomise(module: torch.nn.Module, seed: int, scale: float = 2.0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def build(name: str, labels, scheme, **config):
    factory = plugins.get_registry().get("decoder", name)
    constraints = allowed_transitions(labels, scheme) if scheme else None
    return factory(DIM, len(labels), constraints, **config)


@pytest.mark.parametrize("name", BUILTIN)
class TestDecoderContract:
    def test_registered_by_the_builtin_plugin(self, name):
        assert plugins.get_registry().entry("decoder", name).plugin == "builtin_decoders"

    def test_shapes_and_padding(self, name):
        decoder = build(name, BIOES, "bioes")
        features, gold, mask = batch(0, len(BIOES))
        loss = decoder.loss(features, gold, mask)
        assert loss.shape == (5,) and torch.isfinite(loss).all()
        paths = decoder.decode(features, mask)
        assert paths.shape == mask.shape and paths.dtype == torch.long
        assert (paths[~mask] == -1).all() and (paths[mask] >= 0).all()
        marg = decoder.marginals(features, mask)
        assert marg.shape == (*mask.shape, len(BIOES))
        torch.testing.assert_close(marg.sum(-1), mask.float())

    @pytest.mark.parametrize(("labels", "scheme"), [(BIOES, "bioes"), (IOB2, "iob2")])
    def test_never_invalid_with_random_weights(self, name, labels, scheme):
        for seed in range(3):
            decoder = build(name, labels, scheme)
            randomise(decoder, seed)
            features, _, mask = batch(seed, len(labels), size=16, seq=9)
            for row in decoder.decode(features, mask):
                assert is_valid([labels[i] for i in row[row >= 0]], scheme)

    def test_loss_differentiable(self, name):
        decoder = build(name, BIOES, "bioes")
        features, gold, mask = batch(1, len(BIOES))
        features.requires_grad_(True)
        decoder.loss(features, gold, mask).sum().backward()
        assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
        for pname, p in decoder.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname

    def test_bf16_features(self, name):
        decoder = build(name, BIOES, "bioes").to(torch.bfloat16)
        features, gold, mask = batch(2, len(BIOES), dtype=torch.bfloat16)
        assert decoder.loss(features, gold, mask).dtype == torch.float32
        assert decoder.decode(features, mask).shape == mask.shape

    def test_config_round_trip(self, name):
        decoder = build(name, BIOES, "bioes")
        randomise(decoder, 4)
        config = json.loads(json.dumps(decoder.config()))
        again = build(name, BIOES, "bioes", **config)
        assert again.config() == decoder.config()
        again.load_state_dict(decoder.state_dict())
        features, _, mask = batch(3, len(BIOES))
        assert torch.equal(again.decode(features, mask), decoder.decode(features, mask))

    def test_unknown_option(self, name):
        with pytest.raises(ValueError, match=r"unknown .* config key\(s\): 'colour'"):
            build(name, BIOES, "bioes", colour="blue")


# ---------------------------------------------------------------------------------------------
# brute-force oracles


def best_and_marginals(score, num_tags: int, n: int, labels=None, scheme=None):
    """Over all sequences of length ``n`` (valid ones only, with a scheme): the best one, log Z
    and per-position marginals under weights exp(score(seq))."""
    scores = {}
    c = allowed_transitions(labels, scheme) if scheme else None
    for seq in itertools.product(range(num_tags), repeat=n):
        if c is None or (
            c.start[seq[0]] and c.end[seq[-1]] and all(c.transitions[a][b] for a, b in itertools.pairwise(seq))
        ):
            scores[seq] = score(seq)
    log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
    marg = torch.zeros(n, num_tags, dtype=torch.float64)
    for seq, s in scores.items():
        marg[torch.arange(n), torch.tensor(seq)] += math.exp(s - log_z)
    return max(scores, key=scores.get), float(log_z), marg


SCHEMES = [(None, None), (IOB2, "iob2")]


@pytest.mark.parametrize(("labels", "scheme"), SCHEMES)
def test_softmax_against_brute_force(labels, scheme):
    num_tags = 5
    constraints = allowed_transitions(labels, scheme) if scheme else None
    decoder = SoftmaxDecoder(DIM, num_tags, constraints)
    randomise(decoder, 0, scale=0.5)
    features, gold, mask = batch(5, num_tags, seq=5)
    log_probs = F.log_softmax(decoder.projection(features), -1)
    expected = F.cross_entropy(log_probs.transpose(1, 2), gold, ignore_index=-1, reduction="none").sum(1)
    torch.testing.assert_close(decoder.loss(features, gold, mask), expected)
    paths = decoder.decode(features, mask)
    lp = log_probs.double().tolist()
    for b in range(len(paths)):
        n = int(mask[b].sum())
        score = lambda seq, b=b: sum(lp[b][t][y] for t, y in enumerate(seq))  # noqa: E731
        best, _, _ = best_and_marginals(score, num_tags, n, labels, scheme)
        assert tuple(paths[b, :n].tolist()) == best


def memm_score(outputs, b: int, n: int):
    """log p(seq) summed over the directions, straight from the local models' ``outputs``."""
    first, pair = (x[b].double().tolist() for x in outputs[0])
    backward = [x[b].double().tolist() for x in outputs[1]] if len(outputs) > 1 else None

    def score(seq):
        s = first[0][seq[0]] + sum(pair[t][seq[t - 1]][seq[t]] for t in range(1, n))
        if backward is not None:
            last, back = backward
            s += last[n - 1][seq[-1]] + sum(back[t][seq[t + 1]][seq[t]] for t in range(n - 1))
        return s

    return score


@pytest.mark.parametrize("cls", [MEMMDecoder, BiMEMMDecoder])
@pytest.mark.parametrize(("labels", "scheme", "rank"), [(None, None, None), (IOB2, "iob2", None), (IOB2, "iob2", 2)])
def test_memm_against_brute_force(cls, labels, scheme, rank):
    num_tags = 5
    constraints = allowed_transitions(labels, scheme) if scheme else None
    decoder = cls(DIM, num_tags, constraints, rank=rank)
    randomise(decoder, 1, scale=0.7)
    features, gold, mask = batch(6, num_tags, seq=5)
    gold[1, : int(mask[1].sum())] = 0  # an all-"O" row: valid under the constraints
    with torch.no_grad():
        loss = decoder.loss(features, gold, mask)
        paths = decoder.decode(features, mask)
        marg = decoder.marginals(features, mask)
        outputs = [decoder.forward_model(features)]
        if cls is BiMEMMDecoder:
            outputs.append(decoder.backward_model(features))
    for b in range(len(paths)):
        n = int(mask[b].sum())
        score = memm_score(outputs, b, n)
        best, log_z, expected = best_and_marginals(score, num_tags, n, labels, scheme)
        assert tuple(paths[b, :n].tolist()) == best
        torch.testing.assert_close(marg[b, :n].double(), expected, atol=1e-5, rtol=1e-4)
        gold_seq = tuple(gold[b, :n].tolist())
        if scheme is None or is_valid([labels[i] for i in gold_seq], scheme):
            torch.testing.assert_close(-loss[b].double(), torch.tensor(score(gold_seq), dtype=torch.float64))
        if cls is MEMMDecoder and scheme is None:
            assert abs(log_z) < 1e-5  # locally normalised: the sequence probabilities sum to 1


def test_bimemm_low_rank_parameters():
    decoder = BiMEMMDecoder(DIM, 12, rank=3)
    assert decoder.config() == {"rank": 3}
    shapes = {n: tuple(p.shape) for n, p in decoder.named_parameters() if n.endswith(("left", "right"))}
    assert shapes == {
        "forward_model.left": (12, 3),
        "forward_model.right": (3, 12),
        "backward_model.left": (12, 3),
        "backward_model.right": (3, 12),
    }
    with pytest.raises(ValueError, match="rank must be a positive int"):
        BiMEMMDecoder(DIM, 12, rank=0)
