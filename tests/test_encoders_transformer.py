"""The ``tagpipe.transformer.v1`` encoder: every variant is padding-independent, trains, checkpoints and refuses
bad combinations; the CLI trains it under bf16 and gradient checkpointing (issue 20)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from tagpipe.errors import ConfigValueError
from tagpipe.model import Tagger
from tagpipe.plugins.encoders.attention_blocks import deepnorm_constants
from tagpipe.plugins.encoders.transformer import TransformerEncoder
from tests.conftest import TINY_CONLL, invoke_cli

FEATURES = {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2}
TINY = {**FEATURES, "width": 16, "heads": 2, "key_size": 8, "ffn": 24}
SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["BRUSSELS", "1996-08-22"],
    [],
]
VARIANTS = [
    {"attention": a, "positions": p, "norm": n, "log_n": a == "gau_softmax"}
    for a, p, n in itertools.product(("softmax", "gau_relu2", "gau_softmax"), ("rope", "learned"),
                                     ("pre", "post", "deepnorm"))
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(**config) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder.from_corpus(SENTENCES, **{**TINY, **config})


def name(variant: dict) -> str:
    return "-".join(str(v) for k, v in variant.items() if k != "log_n")


@pytest.mark.parametrize("variant", VARIANTS, ids=map(name, VARIANTS))
def test_padding_changes_nothing_for_the_real_tokens(variant):
    enc = build(**variant, bias=False, norm_gain=False).eval()
    with torch.no_grad():
        together = enc(enc.featurize(SENTENCES))  # shape: [4, 9, 16]
        for row, sentence in enumerate(SENTENCES):
            alone = enc(enc.featurize([sentence]))  # no padding at all
            assert alone.shape == (1, len(sentence), 16)
            torch.testing.assert_close(together[row, : len(sentence)], alone[0], atol=1e-5, rtol=1e-5)
            assert not together[row, len(sentence) :].any(), "rows past a sentence's length must be zero"
    assert torch.isfinite(together).all()


@pytest.mark.parametrize("variant", VARIANTS[::4], ids=map(name, VARIANTS[::4]))
def test_each_variant_fits_the_tiny_corpus(variant):
    sentences = [s for s in SENTENCES if s]
    torch.manual_seed(0)
    model = Tagger.build(sentences, ["O", "S-LOC", "S-PER"], encoder="tagpipe.transformer.v1",
                         decoder="tagpipe.softmax.v1", encoder_config={**TINY, **variant, "dropout": 0.0},
                         scheme="bioes")
    tags = torch.tensor([[i % 3 for i in range(9)]] * len(sentences))
    features = model.featurize(sentences)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.loss(features, tags)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("attention", ["softmax", "gau_relu2"])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(attention):
    enc = build(attention=attention, layers=3).train()
    features = enc.featurize(SENTENCES)

    def loss_and_grads() -> tuple[float, list[torch.Tensor]]:
        enc.zero_grad()
        torch.manual_seed(5)  # the same dropout masks (checkpoints replay the RNG state)
        loss = enc(features).square().sum()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    plain = loss_and_grads()
    assert enc.enable_grad_checkpointing() is True
    checkpointed = loss_and_grads()
    assert checkpointed[0] == pytest.approx(plain[0], rel=1e-6)
    assert len(checkpointed[1]) == len(plain[1]) > 0
    for a, b in zip(checkpointed[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "gau_softmax"])
def test_deepnorm_weights_the_residual_by_alpha_and_scales_the_init_by_beta(attention):
    enc = build(attention=attention, norm="deepnorm", layers=6, width=64, heads=4, key_size=16, ffn=None)
    alpha, beta = deepnorm_constants(6, 2 if attention == "softmax" else 1)
    assert {block.alpha for block in enc.blocks} == {alpha}
    if attention == "softmax":
        q, v = enc.blocks[0].sublayer.query.weight, enc.blocks[0].sublayer.value.weight
    else:
        uvz = enc.blocks[0].sublayer.uvz.weight  # rows: u, v (value-like), then z (queries/keys)
        q, v = uvz[2 * 128 :], uvz[128 : 2 * 128]
    assert v.std().item() / q.std().item() == pytest.approx(beta, rel=0.1)  # same fans: only beta differs
    plain = build(attention=attention, norm="post", layers=6, width=64, heads=4, key_size=16)
    assert {block.alpha for block in plain.blocks} == {1.0}


def test_learned_positions_past_the_table_reuse_its_last_row():
    enc = build(positions="learned", max_positions=4).eval()
    with torch.no_grad():
        out = enc(enc.featurize([SENTENCES[0]]))  # 9 tokens, 4 rows
    assert out.shape == (1, 9, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize(("config", "message"), [
    ({"width": 10, "heads": 4}, "multiple of heads"),
    ({"width": 12, "heads": 4}, "even head size"),
    ({"attention": "gau_relu2", "log_n": True}, "log_n"),
    ({"attention": "linear"}, "attention"),
    ({"norm": "sandwich"}, "norm"),
    ({"layers": 0}, "layers"),
    ({"hiden": 3}, "hiden"),
])  # fmt: skip
def test_bad_configs_are_refused_in_one_line(config, message):
    with pytest.raises(ValueError, match=message) as caught:
        build(**config)
    assert "\n" not in str(caught.value)
    if message in ("multiple of heads", "even head size", "log_n"):
        assert isinstance(caught.value, ConfigValueError)


def test_the_cli_trains_it_under_bf16_and_grad_checkpointing(tmp_path):
    config = tmp_path / "transformer.json"
    config.write_text(json.dumps({"encoder_config": {**TINY, "attention": "gau_softmax", "log_n": True,
                                                     "norm": "deepnorm", "bias": False, "norm_gain": False}}))
    out = tmp_path / "model"
    invoke_cli("train", "--encoder", "transformer", "--config", config, "--train", TINY_CONLL, "--dev", TINY_CONLL,
               "-o", out, "--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--precision", "bf16",
               "--grad-checkpointing", "--device", "cpu", "--threads", "1", "-q")
    saved = json.loads((out / "config.json").read_text())
    assert saved["encoder"]["name"] == "tagpipe.transformer.v1"
    assert saved["encoder"]["config"]["attention"] == "gau_softmax" and saved["encoder"]["config"]["norm"] == "deepnorm"
    assert saved["meta"]["settings"]["grad_checkpointing"] and saved["meta"]["settings"]["precision"] == "bf16"
    model = Tagger.load(out)
    assert [len(t) for t in model.tag([["Peter", "Blackburn"], ["EU", "rejects", "German", "call"]])] == [2, 4]
