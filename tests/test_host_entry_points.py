"""A real third-party distribution, pip-installed (no network) into a temporary ``--target`` folder:
its encoder appears in ``tagpipe plugins``, trains, predicts via the CLI and ``nlp.add_pipe``, and
reloads with ``spacy.load``; its broken and clashing plugins are refused with
one line each, and tagpipe keeps working."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe import host as plugins
from tagpipe.cli import cli
from tests.conftest import TINY_CONLL

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "throwaway_plugin"
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."
PROBLEMS = [
    "plugin 'throwaway_broken' from 'tagpipe-throwaway' failed to import: "
    "ImportError: No module named 'some_missing_dependency'",
    "format 'conll' from plugin 'throwaway_clash' refused: already registered by plugin 'builtin_formats'",
]


def pip_install(source: Path, target: Path) -> None:
    """``pip install`` without network, build isolation or dependencies, into ``target``."""
    build = target.parent / f"build-{source.name}"
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("*.egg-info", "build"))  # keep the tree clean
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(build)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("throwaway") / "site"
    pip_install(FIXTURE, target)
    assert (target / "tagpipe_throwaway-0.3.0.dist-info" / "entry_points.txt").is_file()
    return target


@pytest.fixture
def installed(site, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    return site


def test_installed_plugin_is_listed_and_the_bad_ones_are_refused_by_name(installed):
    registry = plugins.get_registry()
    assert registry.entry("encoder", "throwaway.embed.v1").plugin == "throwaway"
    assert registry.errors == PROBLEMS
    assert registry.entry("format", "conll").plugin == "builtin_formats"  # the clash changed nothing
    assert "tagpipe.crf.v1" in registry.names("decoder")

    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    listed = [line.split() for line in result.stdout.splitlines()]  # columns as wide as the longest name and kind
    assert ["throwaway.embed.v1", "encoder", "throwaway", "(tagpipe-throwaway)"] in listed
    assert result.stderr.splitlines() == [f"warning: {p}" for p in PROBLEMS]

    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).stdout)
    assert {"name": "throwaway.embed.v1", "kind": "encoder", "plugin": "throwaway",
            "distribution": "tagpipe-throwaway"} in data["components"]
    assert {"name": "throwaway", "distribution": "tagpipe-throwaway"} in data["plugins"]
    assert data["errors"] == PROBLEMS


def test_installed_plugin_trains_predicts_and_reloads_with_spacy(installed, tmp_path):
    model = tmp_path / "model"
    train = CliRunner().invoke(cli, ["train", "--train", str(TINY_CONLL), "--dev", str(TINY_CONLL),
                                     "--encoder", "throwaway.embed.v1", "--epochs", "15", "--batch-size", "4",
                                     "--lr", "0.05", "--patience", "100", "--device", "cpu", "-o", str(model), "-q"])
    assert train.exit_code == 0, train.output
    # other commands warn about the refused plugins in one line, and carry on
    assert train.stderr.splitlines()[0].startswith("warning: 2 plugin problem(s), see `tagpipe plugins`: ")
    assert json.loads((model / "config.json").read_text())["encoder"]["name"] == "throwaway.embed.v1"

    text = tmp_path / "in.txt"
    text.write_text(SENTENCE + "\n")
    out = tmp_path / "out.jsonl"
    annotate = CliRunner().invoke(cli, ["annotate", str(text), "--model", str(model), "-o", str(out), "-q"])
    assert annotate.exit_code == 0, annotate.output
    entities = json.loads(out.read_text())["entities"]
    assert [(e["text"], e["label"]) for e in entities][:1] == [("Angela Merkel", "PER")]
    assert all(0 < e["score"] <= 1 for e in entities)

    import spacy

    import tagpipe.spacy_bridge.factories  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_ner", config={"model": str(model)})
    before = [(e.text, e.label_) for e in nlp(SENTENCE).ents]
    assert before[:1] == [("Angela Merkel", "PER")]
    assert "tagpipe-throwaway>=0.3.0" in nlp.meta["requirements"]  # so `spacy package` installs the plugin
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(model)
    assert [(e.text, e.label_) for e in spacy.load(tmp_path / "pipeline")(SENTENCE).ents] == before


