"""Token-level tagging: ``tagpipe train --task tag`` on UD UPOS or a CoNLL column, ``tagpipe evaluate``
token accuracy, and the ``tagpipe_tagger`` component (``token.pos_`` or ``token.tag_``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli
from tests.conftest import TINY_BILSTM, TINY_CONLL, shared_path

spacy = pytest.importorskip("spacy")

import tagpipe.spacy_bridge.factories  # noqa: E402,F401

UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"}


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ud_split(tmp_path_factory) -> tuple[Path, Path]:
    """The first 300 sentences of UD English-EWT dev to train on, the next 150 to test on."""
    blocks = shared_path("ud", "en_ewt-ud-dev.conllu").read_text(encoding="utf-8").strip().split("\n\n")
    folder = tmp_path_factory.mktemp("ud")
    (folder / "train.conllu").write_text("\n\n".join(blocks[:300]) + "\n\n", encoding="utf-8")
    (folder / "test.conllu").write_text("\n\n".join(blocks[300:450]) + "\n\n", encoding="utf-8")
    return folder / "train.conllu", folder / "test.conllu"


@pytest.fixture(scope="module")
def upos_model(ud_split, tmp_path_factory) -> Path:
    train, test = ud_split
    out = tmp_path_factory.mktemp("upos") / "model"
    config = tmp_path_factory.mktemp("cfg") / "small.json"
    config.write_text(json.dumps({"encoder_config": TINY_BILSTM}))
    invoke("train", "--config", str(config), "--task", "tag", "--format", "conllu", "--train", str(train),
           "--dev", str(test), "--epochs", "4", "--batch-size", "16", "--lr", "0.01", "--device", "cpu",
           "--output", str(out), "-q")
    return out


def test_evaluate_reports_token_and_per_tag_accuracy_on_ud(upos_model, ud_split):
    scores = json.loads(invoke("evaluate", str(ud_split[1]), "--format", "conllu", "--model", str(upos_model),
                               "--json").stdout)
    assert scores["accuracy"] > 0.6  # 4 epochs of a tiny BiLSTM-CRF on 300 sentences
    assert scores["tokens"] > 1000 and set(scores["per_tag"]) <= UPOS
    assert scores["per_tag"]["PUNCT"]["accuracy"] > 0.8 and scores["per_tag"]["NOUN"]["support"] > 100
    table = invoke("evaluate", str(ud_split[1]), "--format", "conllu", "--model", str(upos_model)).stdout
    assert table.splitlines()[0].split() == ["tag", "accuracy", "support"] and "all" in table


def test_upos_model_writes_token_pos(upos_model):
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("tagpipe_tagger", config={"model": str(upos_model)})
    doc = nlp("The cat sat on the mat .")
    assert tagger.attr == "pos" and set(tagger.labels) <= UPOS
    assert [t.pos_ for t in doc][-1] == "PUNCT" and doc[0].pos_ == "DET"
    assert all(t.tag_ == "" for t in doc)
    assert all(0.0 < t._.tagpipe_score <= 1.0 for t in doc)
    overridden = spacy.blank("en")
    overridden.add_pipe("tagpipe_tagger", config={"model": str(upos_model), "attr": "tag"})
    assert overridden("The cat .")[0].tag_ == "DET"


def test_tagger_scores_and_round_trips(upos_model, tmp_path):
    from spacy.tokens import Doc
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_tagger", config={"model": str(upos_model)})
    words = ["The", "cat", "sat", "on", "the", "mat", "."]
    gold = Doc(nlp.vocab, words=words, pos=["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"])
    scores = nlp.evaluate([Example(Doc(nlp.vocab, words=words), gold)])
    assert scores["pos_acc"] >= 5 / 7
    expected = [t.pos_ for t in nlp(" ".join(words))]
    nlp.to_disk(tmp_path / "pipeline")
    assert [t.pos_ for t in spacy.load(tmp_path / "pipeline")(" ".join(words))] == expected
    again = spacy.blank("en")
    again.add_pipe("tagpipe_tagger")
    assert [t.pos_ for t in again.from_bytes(nlp.to_bytes())(" ".join(words))] == expected


def test_conll_column_model_writes_token_tag(tmp_path):
    out = tmp_path / "ptb"
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"encoder_config": TINY_BILSTM}))
    invoke("train", "--config", str(config), "--task", "tag", "--tag-column", "1", "--train", str(TINY_CONLL),
           "--dev", str(TINY_CONLL), "--epochs", "12", "--batch-size", "4", "--lr", "0.02", "--device", "cpu",
           "--output", str(out), "-q")
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("tagpipe_tagger", config={"model": str(out)})
    doc = nlp("Angela Merkel met Emmanuel Macron in Paris .")
    assert tagger.attr == "tag" and "NNP" in tagger.labels
    assert doc[0].tag_ == "NNP" and doc[-1].tag_ == "." and all(t.pos_ == "" for t in doc)


def test_tagger_trains_inside_spacy(ud_split):
    from spacy.training import Example
    from thinc.api import Adam

    from tagpipe.corpora.conllu import read_conllu

    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("tagpipe_tagger", config={"encoder_config": TINY_BILSTM})
    examples = []
    for sentence in list(read_conllu(ud_split[0]))[:120]:
        reference = spacy.tokens.Doc(nlp.vocab, words=sentence.tokens, pos=sentence.upos)
        examples.append(Example(spacy.tokens.Doc(nlp.vocab, words=sentence.tokens), reference))
    nlp.initialize(lambda: examples)
    assert tagger.attr == "pos" and "NOUN" in tagger.labels
    first = nlp.evaluate(examples[:40])["pos_acc"]
    losses: dict[str, float] = {}
    optimizer = Adam(0.01)  # spaCy's optimizer trains the component, as [training.optimizer] does in spacy train
    for _ in range(3):
        for start in range(0, len(examples), 16):
            nlp.update(examples[start:start + 16], sgd=optimizer, losses=losses)
    assert losses["tagpipe_tagger"] > 0
    assert nlp.evaluate(examples[:40])["pos_acc"] > max(first, 0.5)
