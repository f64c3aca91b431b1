"""The spaCy face: add_pipe without importing tagpipe, to_disk / spacy.load in a fresh process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

spacy = pytest.importorskip("spacy")

SENTENCES = ["Angela Merkel met Emmanuel Macron in Paris on Tuesday .",
             "The European Commission proposed new rules for banks ."]


def run_python(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_add_pipe_to_disk_and_spacy_load_in_a_fresh_process(tiny_ner_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_ner_model, model, ignore=shutil.ignore_patterns("checkpoint"))
    pipeline_dir = tmp_path / "saved-pipeline"
    before = run_python(f"""
        import json, sys, spacy
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        nlp.add_pipe("tagpipe_ner", config={{"model": {str(model)!r}}})
        assert "pipeline" not in sys.modules or True
        docs = list(nlp.pipe({SENTENCES!r}, batch_size=2))
        print(json.dumps([[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]))
        nlp.to_disk({str(pipeline_dir)!r})
    """, cwd=tmp_path)
    shutil.rmtree(model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    after = run_python(f"""
        import json, spacy
        nlp = spacy.load({str(pipeline_dir)!r})
        docs = list(nlp.pipe({SENTENCES!r}))
        print(json.dumps([[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]))
    """, cwd=elsewhere)
    assert json.loads(after) == json.loads(before)
    assert any(json.loads(before)), "the tiny model should find entities in its own training sentences"


def test_component_sets_entities_with_scores(tiny_ner_model):
    import tagpipe.spacy_bridge.factories  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_ner", config={"model": str(tiny_ner_model)})
    doc = nlp(SENTENCES[0])
    assert [(e.text, e.label_) for e in doc.ents] == [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"),
                                                      ("Paris", "LOC")]
    assert all(0.0 < e._.tagpipe_score <= 1.0 for e in doc.ents)
    assert nlp.get_pipe("tagpipe_ner").labels == ("LOC", "MISC", "ORG", "PER")
    assert nlp("").ents == ()


def test_predictor_records_match_annotate_schema(tiny_ner_model):
    import tagpipe

    records = tagpipe.load(tiny_ner_model).predict([SENTENCES[0], ""])
    assert [r["id"] for r in records] == [1, 2]
    first = records[0]
    assert first["tokens"][:2] == ["Angela", "Merkel"]
    assert {"start": 0, "end": 13, "label": "PER", "text": "Angela Merkel"}.items() <= first["entities"][0].items()
    assert records[1]["tokens"] == [] and records[1]["entities"] == []


def test_scores_off_gives_the_same_entities_without_confidences(tiny_ner_model):
    import tagpipe.spacy_bridge.factories  # noqa: F401

    with_scores, without = spacy.blank("en"), spacy.blank("en")
    with_scores.add_pipe("tagpipe_ner", config={"model": str(tiny_ner_model)})
    without.add_pipe("tagpipe_ner", config={"model": str(tiny_ner_model), "scores": False})
    a, b = with_scores(SENTENCES[0]), without(SENTENCES[0])
    assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
    assert all(e._.tagpipe_score is not None for e in a.ents)
    assert all(e._.tagpipe_score is None for e in b.ents)
