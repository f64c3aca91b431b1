"""The embedded models by name: ``--model en|zh`` wherever a model folder is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from click.testing import CliRunner

import tagpipe
from tagpipe.cli import cli
from tagpipe.defaults import EMBEDDED_MODELS, default_model_path, embedded_model_path, model_path
from tagpipe.errors import ModelError

REPO = Path(__file__).resolve().parent.parent
ZH_SAMPLE = REPO / "corpora" / "samples" / "news-zh.txt"


def test_names_resolve_to_the_embedded_folders_and_anything_else_is_a_path(tmp_path):
    assert model_path(None) == default_model_path() == model_path("en") == embedded_model_path("en")
    assert model_path("zh") == embedded_model_path("zh") != model_path("en")
    assert model_path("./en") == Path("en") and model_path(tmp_path) == tmp_path
    assert model_path("models/x") == Path("models/x")
    with pytest.raises(ModelError, match="no embedded model named 'fr'"):
        embedded_model_path("fr")
    for name in EMBEDDED_MODELS:
        assert json.loads((embedded_model_path(name) / "config.json").read_text())["lang"] == name


def test_annotate_model_zh_tags_chinese_characters_out_of_the_box(tmp_path):
    out = tmp_path / "zh.jsonl"
    result = CliRunner().invoke(cli, ["annotate", str(ZH_SAMPLE), "--model", "zh", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(ZH_SAMPLE.read_text(encoding="utf-8").splitlines())
    found = {(e["text"], e["label"]) for r in records for e in r["entities"]}
    assert {("北京", "LOC"), ("杭州", "LOC"), ("张伟", "PER"), ("清华大学", "ORG")} <= found, found
    assert all(len(t) == 1 for r in records for t in r.get("tokens", [])), "one token per character"


def test_the_python_api_and_the_spacy_config_take_names_too():
    assert tagpipe.load("zh").nlp.lang == "zh"
    nlp = spacy.blank("zh")
    nlp.add_pipe("tagpipe_ner", config={"model": "zh"})
    doc = nlp("张伟在北京工作。")
    assert ("北京", "LOC") in {(e.text, e.label_) for e in doc.ents}


def test_info_lists_both_models_with_their_test_scores():
    report = json.loads(CliRunner().invoke(cli, ["info", "--json"]).output)
    rows = {m["name"]: m for m in report["embedded_models"]}
    assert set(rows) == {"en", "zh"} and "MSRA" in rows["zh"]["test"] and "CoNLL-2003" in rows["en"]["test"]


def test_shipping_a_model_keeps_no_machine_path(tiny_ner_model, tmp_path):
    """benchmarks/ship_model.py: the embedded folders must not carry this machine's paths (invalid_tags included)."""
    import shutil
    import subprocess
    import sys

    source = tmp_path / "trained"
    shutil.copytree(tiny_ner_model, source)
    config = json.loads((source / "config.json").read_text())
    config["meta"]["invalid_tags"] = {"/home/someone/data/train.txt": {"repaired": 2, "dropped": 0}}
    (source / "config.json").write_text(json.dumps(config))
    repo = Path(tagpipe.__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(repo / "benchmarks" / "ship_model.py"), str(source), str(tmp_path / "shipped")],
                   check=True, capture_output=True)
    meta = json.loads((tmp_path / "shipped" / "config.json").read_text())["meta"]
    assert meta["invalid_tags"] == {"train.txt": {"repaired": 2, "dropped": 0}}
    assert meta["settings"]["train"] == "tiny.conll" and "/" not in json.dumps(meta)
