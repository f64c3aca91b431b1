"""Pretrained vectors in the from-scratch encoders: both file formats, cased and uncased lookup,
words beyond the training vocabulary, frozen or fine-tuned rows."""

from __future__ import annotations

import numpy
import pytest
import srsly
import torch
from spacy.strings import hash_string

from tagpipe.errors import TagpipeError
from tagpipe.plugins.encoders.bilstm import BiLSTMEncoder
from tagpipe.plugins.encoders.token_features import UNK
from tagpipe.plugins.encoders.vectors import SpacyVectors, TextVectors, open_vectors

TRAIN = [["Paris", "is", "in", "France", "."], ["Berlin", "is", "big", "."]]
TINY = {"char_dim": 4, "char_hidden": 3, "casing_dim": 2, "hidden": 3}


def write_spacy_vectors(folder, table: dict[str, int], rows: list[list[float]]):
    """A spaCy vectors folder as `spacy init vectors` writes it: vocab/{vectors,key2row,strings.json}."""
    vocab = folder / "vocab"
    vocab.mkdir(parents=True)
    with open(vocab / "vectors", "wb") as f:
        numpy.save(f, numpy.array(rows, dtype=numpy.float32), allow_pickle=False)
    srsly.write_msgpack(vocab / "key2row", {hash_string(w): r for w, r in table.items()})
    srsly.write_json(vocab / "strings.json", sorted(table))
    (vocab / "vectors.cfg").write_text('{"mode": "default"}')
    return folder


@pytest.fixture
def glove(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 1 1\nparis 2 2\nfrance 3 3\nrome 4 4\nitaly 5 5\nmadrid 6 6\n", encoding="utf-8")
    return path


@pytest.fixture
def spacy_folder(tmp_path):
    table = {"Paris": 0, "paris": 1, "France": 2, "Rome": 3, "rome": 3, "ROME": 3, "Italy": 4}
    return write_spacy_vectors(tmp_path / "vecs", table, [[0, 1], [1, 1], [2, 2], [3, 3], [4, 4]])


def row(enc, token):
    return enc.word_embed.weight[enc.word_id(token)].tolist()


def test_glove_is_uncased_and_adds_its_most_frequent_words_beyond_training(glove):
    assert open_vectors(glove) == TextVectors(glove, cased=False)
    enc = BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(glove), pretrained_limit=4, **TINY)
    assert enc.cfg.lowercase is True and enc.config()["word_dim"] == 2
    assert row(enc, "PARIS") == row(enc, "Paris") == [2, 2]
    assert row(enc, "Rome") == [4, 4]  # never in training: among the file's first 4 words
    assert enc.word_id("Madrid") == UNK  # beyond the limit
    assert enc.word_id("Berlin") not in (UNK, enc.word_id("Paris"))  # a training word the file lacks


def test_spacy_table_is_cased_with_a_lowercase_fallback(spacy_folder):
    source = open_vectors(spacy_folder)
    assert source == SpacyVectors(spacy_folder / "vocab") and open_vectors(spacy_folder / "vocab") == source
    enc = BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(spacy_folder), pretrained_limit=10, **TINY)
    assert enc.cfg.lowercase is False and enc.config()["word_dim"] == 2
    assert row(enc, "Paris") == [0, 1] and row(enc, "paris") == [1, 1]  # two rows, as the table has
    assert row(enc, "FRANCE") == row(enc, "france") == [2, 2]  # no such key: lowercased, then capitalised
    # beyond training, one key per row, the shortest: "ROME"/"Rome"/"rome" share row 3
    assert row(enc, "Italy") == [4, 4] and row(enc, "rome") == [3, 3]
    assert sum(w.lower() == "rome" for w in enc.words) == 1


def test_an_unseen_word_keeps_its_vector_after_saving_and_loading(glove, tmp_path):
    enc = BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(glove), pretrained_limit=5, **TINY)
    enc.save_assets(tmp_path / "m")
    again = BiLSTMEncoder.from_assets(tmp_path / "m", enc.config())
    again.load_state_dict(enc.state_dict())
    assert again.word_id("Italy") == enc.word_id("Italy") != UNK and row(again, "Italy") == [5, 5]
    assert again.cfg.lowercase is True and again.pretrained_rows == enc.pretrained_rows == 5


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_vectors_stay_put_while_the_other_rows_train(glove, freeze):
    torch.manual_seed(0)
    enc = BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(glove), freeze_vectors=freeze,
                                    word_dropout=0.0, **TINY)
    before = enc.word_embed.weight.detach().clone()
    groups = enc.parameter_groups(0.1)
    opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        enc(enc.featurize(TRAIN)).sum().backward()
        opt.step()
    after = enc.word_embed.weight.detach()
    paris, berlin = enc.word_id("paris"), enc.word_id("berlin")
    assert torch.equal(after[paris], before[paris]) is freeze
    assert not torch.equal(after[berlin], before[berlin])  # a training-only word always trains
    assert torch.equal(after[enc.word_id("italy")], before[enc.word_id("italy")]) is freeze  # unseen, decay only


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.txt", "no such vectors file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "without vocab/vectors"),
])
def test_bad_vectors_paths_fail_in_one_line(tmp_path, make, message):
    with pytest.raises(TagpipeError, match=message):
        open_vectors(make(tmp_path))


def test_a_damaged_spacy_table_is_named(spacy_folder):
    (spacy_folder / "vocab" / "vectors").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(TagpipeError, match="not a readable spaCy vectors table"):
        BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(spacy_folder), **TINY)


def test_a_pickled_spacy_table_is_refused_not_run(spacy_folder):
    with open(spacy_folder / "vocab" / "vectors", "wb") as f:
        numpy.save(f, numpy.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TagpipeError, match="not a readable spaCy vectors table"):
        BiLSTMEncoder.from_corpus(TRAIN, pretrained_vectors=str(spacy_folder), **TINY)


def test_a_home_relative_path_is_expanded(glove, monkeypatch):
    """Configs in the repository name the data folder as ``~/.cache/tagpipe-data/...``."""
    monkeypatch.setenv("HOME", str(glove.parent))
    assert open_vectors("~/glove.txt") == TextVectors(glove, cased=False)
