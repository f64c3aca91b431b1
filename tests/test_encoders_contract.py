"""The encoder contract: every registered encoder x every registered decoder trains, round-trips
and predicts.

The pairs are read from the registry when the tests are collected, so a newly registered encoder
or decoder is covered without editing this file, except that an encoder needing configuration
(a pretrained folder, its stages) must get a tiny one in :data:`ENCODER_CONFIGS`; one without an
entry fails, naming the table. Each case uses a few sentences of ``corpora/samples/tiny.conll``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tagpipe.corpora.conll import read_conll
from tagpipe.corpora.schemes import tags_to_spans
from tagpipe.host import build_registry, make_plugin_manager
from tagpipe.model import Tagger, span_labels
from tests.conftest import TINY_CONLL

#: a fixture by name (``request.getfixturevalue``), so the tiny BERT is built only when a case needs it
Fixture = Callable[[str], Any]

#: registry name -> tiny config for that encoder. Add an entry when you register an encoder.
ENCODER_CONFIGS: dict[str, Callable[[Fixture], dict[str, Any]]] = {
    "tagpipe.bilstm.v1": lambda fixture: {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2,
                                          "hidden": 8},
    "tagpipe.bert.v1": lambda fixture: {"pretrained": str(fixture("tiny_bert_dir"))},
    "tagpipe.idcnn.v1": lambda fixture: {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2,
                                         "filters": 8, "dilations": [1, 2], "iterations": 2},
    "tagpipe.stack.v1": lambda fixture: {
        "pretrained": str(fixture("tiny_bert_dir")),  # goes to the first stage, as `--pretrained` does
        "encoders": [{"name": "tagpipe.bert.v1"}, {"name": "tagpipe.bilstm.v1", "config": {"hidden": 8}}],
    },
    "tagpipe.transformer.v1": lambda fixture: {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2,
                                               "width": 8, "heads": 2, "ffn": 16},
}
#: registry name -> config for a decoder that needs one (the contract's decoders need none)
DECODER_CONFIGS: dict[str, dict[str, Any]] = {}


def registered(kind: str) -> list[str]:
    """The names of ``kind`` a fresh plugin manager registers (builtins and installed plugins)."""
    return build_registry(make_plugin_manager()).names(kind)


PAIRS = list(itertools.product(registered("encoder"), registered("decoder")))
SENTENCES = [s for s in read_conll(TINY_CONLL, scheme="iob2", target_scheme="bioes") if s.tokens][:5]
TYPES = sorted({label for s in SENTENCES for _, _, label in tags_to_spans(s.tags or [], "bioes")})
LABELS = span_labels(TYPES, "bioes")
TEXTS = [" ".join(s.tokens) for s in SENTENCES] + ["Paris", ""]


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread each avoids oversubscription (and keeps runs deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def encoder_config(name: str, fixture: Fixture) -> dict[str, Any]:
    if name not in ENCODER_CONFIGS:
        pytest.fail(f"encoder {name!r} is registered but has no test config: add a tiny one to ENCODER_CONFIGS "
                    f"in {Path(__file__).name} so the contract test covers it", pytrace=False)
    return ENCODER_CONFIGS[name](fixture)


def build(encoder: str, decoder: str, fixture: Fixture) -> Tagger:
    torch.manual_seed(0)
    return Tagger.build([s.tokens for s in SENTENCES], LABELS, encoder=encoder, decoder=decoder,
                        encoder_config=encoder_config(encoder, fixture), decoder_config=DECODER_CONFIGS.get(decoder),
                        scheme="bioes")


def gold(model: Tagger) -> torch.Tensor:
    """``[B, T]`` tag ids of SENTENCES, -1 at padding."""
    width = max(len(s.tokens) for s in SENTENCES)
    return torch.tensor([[model.label_ids[t] for t in s.tags or []] + [-1] * (width - len(s.tokens))
                         for s in SENTENCES])


def optimizer_groups(model: Tagger, lr: float) -> list[dict[str, Any]]:
    """What the trainer optimises: the encoder's own parameter groups plus the decoder."""
    return [*model.encoder.parameter_groups(lr), {"params": list(model.decoder.parameters()), "lr": lr}]


def train_step(model: Tagger) -> dict[str, Any]:
    """One Adam step on SENTENCES; the loss, the gradients and which parameters moved."""
    model.train()
    torch.manual_seed(1)
    loss = model.loss(model.featurize([s.tokens for s in SENTENCES]), gold(model))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(optimizer_groups(model, 1e-2))
    optimizer.step()
    optimizer.zero_grad()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    model.eval()
    return {"loss": loss.detach(), "grads": grads, "moved": moved}


def outputs(model: Tagger, sentences: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
    """Eval-mode features, decoded ids and marginals of one batch."""
    model.eval()
    features = model.featurize(sentences)
    with torch.no_grad():
        hidden, mask = model.encode(features)
        out = {f"features.{k}": v for k, v in features.items()}
        out["hidden"] = hidden
        out["decode"] = model.decoder.decode(hidden, mask)
        out["marginals"] = model.decoder.marginals(hidden, mask)
    return out


def token_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each token, found left to right in ``text``."""
    offsets, position = [], 0
    for token in tokens:
        start = text.index(token, position)
        position = start + len(token)
        offsets.append((start, position))
    return offsets


def test_the_registry_offers_pairs_to_check():
    assert PAIRS, "no encoder or no decoder is registered: the contract test below would check nothing"


@pytest.mark.parametrize(("encoder", "decoder"), PAIRS, ids=[f"{e}+{d}" for e, d in PAIRS])
class TestEncoderDecoderContract:
    def test_one_training_step_is_finite_and_moves_both_parts(self, encoder, decoder, request):
        model = build(encoder, decoder, request.getfixturevalue)
        with torch.no_grad():
            hidden = model.encoder.eval()(model.encoder.featurize([s.tokens for s in SENTENCES]))
        assert hidden.shape == (len(SENTENCES), max(map(len, SENTENCES)), model.encoder.output_dim)
        names = {id(p): n for n, p in model.named_parameters()}
        grouped = [names.get(id(p), "<not a model parameter>") for g in optimizer_groups(model, 1.0)
                   for p in g["params"]]
        assert sorted(grouped) == sorted(names.values()), \
            "parameter_groups() must name every encoder parameter exactly once"

        step = train_step(model)
        assert step["loss"].ndim == 0 and torch.isfinite(step["loss"]), step["loss"]
        for name, grad in step["grads"].items():
            assert torch.isfinite(grad).all(), f"non-finite gradient in {name}"
        for part in ("encoder.", "decoder."):
            assert any(n.startswith(part) and g.abs().sum() > 0 for n, g in step["grads"].items()), \
                f"no gradient reaches the {part[:-1]}"
            assert any(n.startswith(part) for n in step["moved"]), f"the optimizer step left the {part[:-1]} as it was"

    def test_save_and_load_give_identical_outputs(self, encoder, decoder, request, tmp_path):
        model = build(encoder, decoder, request.getfixturevalue)
        train_step(model)
        model.save(tmp_path / "model")
        loaded = Tagger.load(tmp_path / "model")
        assert (loaded.encoder_name, loaded.decoder_name) == (encoder, decoder)
        assert loaded.config() == model.config()
        state, loaded_state = model.state_dict(), loaded.state_dict()
        assert state.keys() == loaded_state.keys()
        differing = [k for k in state if not torch.equal(state[k], loaded_state[k])]
        assert not differing, f"weights differ after save + load: {differing}"

        sentences = [s.tokens for s in SENTENCES] + [["Paris"]]
        expected, got = outputs(model, sentences), outputs(loaded, sentences)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{key} differs after save + load"
        decoded = expected["decode"]
        assert ((decoded >= 0) == (torch.arange(decoded.shape[1]) < torch.tensor([len(s) for s in sentences])[:, None])
                ).all(), "decode must give a tag per token and -1 at padding"

    def test_public_predict_gives_well_formed_records(self, encoder, decoder, request, tmp_path):
        import tagpipe

        model = build(encoder, decoder, request.getfixturevalue)
        train_step(model)
        model.save(tmp_path / "model")
        records = tagpipe.load(str(tmp_path / "model")).predict(TEXTS)

        assert [r["id"] for r in records] == list(range(1, len(TEXTS) + 1))
        assert [r["text"] for r in records] == TEXTS
        assert records[-1]["tokens"] == [] and records[-1]["entities"] == []
        # the entities are the loaded tagger's own tags, as spans at the tokens' character offsets
        loaded = Tagger.load(tmp_path / "model")
        tags = loaded.tag([r["tokens"] for r in records])
        for record, sentence_tags in zip(records, tags, strict=True):
            text, entities = record["text"], record["entities"]
            offsets = token_offsets(text, record["tokens"])
            expected = [(offsets[a][0], offsets[b - 1][1], label) for a, b, label in tags_to_spans(sentence_tags,
                                                                                                   "bioes")]
            assert [(e["start"], e["end"], e["label"]) for e in entities] == expected
            for entity in entities:
                assert 0 <= entity["start"] < entity["end"] <= len(text)
                assert text[entity["start"] : entity["end"]] == entity["text"]
                assert entity["label"] in TYPES
                assert 0.0 <= entity["score"] <= 1.0
