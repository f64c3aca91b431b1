"""The ID-CNN encoder: receptive field, padding independence, config checks, learning."""

from __future__ import annotations

import pytest
import torch

from tagpipe.errors import ConfigValueError
from tagpipe.plugins.encoders.idcnn import IDCNNEncoder

CORPUS = [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"], ["a", "b", "c", "d", "e", "f", "g"]]
TINY = {"word_dim": 6, "char_dim": 4, "char_hidden": 3, "casing_dim": 2, "filters": 5, "dropout": 0.0,
        "word_dropout": 0.0}


def build(**config) -> IDCNNEncoder:
    torch.manual_seed(0)
    return IDCNNEncoder.from_corpus(CORPUS, **{**TINY, **config}).eval()


def test_receptive_field_is_one_plus_the_dilated_spans():
    """dilations [1, 2] iterated twice: a token sees 1 (projection) + 2 * (1 + 2) = 7 tokens each side."""
    enc = build(dilations=[1, 2], iterations=2)
    sentence = [["a"] * 20]
    base = enc(enc.featurize(sentence))[0]
    for changed, reach in ((10 + 7, True), (10 + 8, False)):
        other = [["a"] * 20]
        other[0][changed] = "EU"
        moved = not torch.allclose(enc(enc.featurize(other))[0][10], base[10])
        assert moved is reach, changed


def test_padding_changes_nothing_and_stays_zero():
    enc = build()
    alone = enc(enc.featurize([CORPUS[1]]))[0]
    batched = enc(enc.featurize(CORPUS))
    assert torch.allclose(batched[1, :2], alone, atol=1e-6)
    assert batched[1, 2:].abs().sum() == 0 and batched.shape == (3, 7, 5)


@pytest.mark.parametrize("bad, message", [
    ({"kernel_size": 4}, "odd"), ({"dilations": [1, 0]}, "dilations"), ({"dilations": "1,2"}, "dilations"),
    ({"filters": 0}, "filters"),
])
def test_bad_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        IDCNNEncoder.from_corpus(CORPUS, **{**TINY, **bad})
    assert issubclass(ConfigValueError, ValueError)


def test_learns_a_tag_that_depends_on_the_left_neighbour():
    """Tag 1 when the previous token is "x": a context-free model cannot do better than chance."""
    gen = torch.Generator().manual_seed(0)
    words = ["x", "y", "z", "w"]
    train = [[words[i] for i in torch.randint(0, 4, (8,), generator=gen)] for _ in range(200)]
    torch.manual_seed(0)
    enc = IDCNNEncoder.from_corpus(train, **{**TINY, "filters": 16, "dilations": [1], "iterations": 1})
    head = torch.nn.Linear(enc.output_dim, 2)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=0.01)
    gold = torch.tensor([[0] + [int(s[i - 1] == "x") for i in range(1, 8)] for s in train])
    feats = enc.featurize(train)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(head(enc(feats)).flatten(0, 1), gold.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    accuracy = (head(enc(feats)).argmax(-1) == gold).float().mean()
    assert accuracy > 0.97
