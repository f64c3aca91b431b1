"""The command line: one readable line for user errors, annotate's records, evaluate's table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "corpora" / "samples" / "tiny.conll"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_help_works_from_the_script_and_the_console_entry_point():
    script = subprocess.run([sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert script.returncode == 0 and "annotate" in script.stdout
    tagpipe = shutil.which("tagpipe")
    if tagpipe:
        installed = subprocess.run([tagpipe, "--help"], capture_output=True, text=True)
        assert installed.stdout == script.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    missing = subprocess.run([sys.executable, "cli.py", "evaluate", "nope.txt", "--model", str(tmp_path)],
                             cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "Traceback" not in missing.stderr
    assert "is not a tagpipe model folder" in missing.stderr

    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nrejects O O O\n")
    result = invoke("train", "--train", str(bad), "--epochs", "1", "--output", str(tmp_path / "m"), "-q")
    assert result.exit_code == 1
    assert f"{bad}:2:" in result.output and "Traceback" not in result.output


def test_annotate_text_and_jsonl(tiny_ner_model, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Angela Merkel met Emmanuel Macron in Paris on Tuesday .\n\nHello world\n")
    out = tmp_path / "out.jsonl"
    result = invoke("annotate", str(text), "--model", str(tiny_ner_model), "--output", str(out), "-q")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [1, 2, 3]
    assert records[1] == {"id": 2, "text": "", "tokens": [], "entities": []}
    assert records[0]["entities"][0]["text"] == "Angela Merkel"

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "text": "Angela Merkel visited Paris .", "source": "x"}) + "\n")
    out2 = tmp_path / "out2.jsonl"
    result = invoke("annotate", str(jsonl), "--model", str(tiny_ner_model), "--output", str(out2), "-q")
    assert result.exit_code == 0, result.output
    record = json.loads(out2.read_text())
    assert record["id"] == "a" and record["source"] == "x" and record["entities"]


def test_evaluate_prints_a_table_and_json(tiny_ner_model):
    result = invoke("evaluate", str(TINY), "--model", str(tiny_ner_model), "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert {"precision", "recall", "f1", "per_type"} <= scores.keys()
    assert scores["f1"] > 0.8  # the tiny model was fitted on this very file
    table = invoke("evaluate", str(TINY), "--model", str(tiny_ner_model)).output
    assert "micro" in table and "PER" in table


def test_plugins_lists_components_with_their_plugin():
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "tagpipe.crf.v1" in result.output and "builtin_decoders" in result.output


def test_info_reports_versions_devices_plugins_and_embedded_models():
    result = invoke("info", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert all(report["versions"][name] for name in ("torch", "spacy", "transformers", "pluggy"))
    assert report["devices"][0].startswith("cpu")
    assert {"builtin_encoders", "builtin_decoders", "perturbed_masking"} <= {p["name"] for p in report["plugins"]}
    (english,) = [m for m in report["embedded_models"] if m["name"] == "en"]
    assert Path(english["path"], "config.json").is_file() and "86.17" in english["test"]
    text = invoke("info").output
    assert "torch" in text and "embedded model 'en'" in text


def test_train_refuses_an_unknown_language_before_training(tmp_path):
    result = invoke("train", "--train", str(TINY), "--lang", "xx-bogus", "--output", str(tmp_path / "m"), "-q")
    assert result.exit_code == 1 and "--lang 'xx-bogus': spaCy has no such language" in result.output
    assert not (tmp_path / "m").exists()


def test_train_without_dev_prints_no_dev_score(tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"encoder_config": {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "hidden": 8}}))
    result = invoke("train", "--config", str(config), "--train", str(TINY), "--epochs", "1", "--output",
                    str(tmp_path / "m"), "-q")
    assert result.exit_code == 0, result.output
    assert "dev score" not in result.output and "no --dev: kept epoch 1 (lowest training loss" in result.output


def test_a_misspelt_decoder_config_key_is_one_line(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"decoder": "softmax", "decoder_config": {"dropuot": 0.1}}))
    result = invoke("train", "--config", str(config), "--train", str(TINY), "--output", str(tmp_path / "m"), "-q")
    assert result.exit_code == 1
    assert "unknown softmax decoder config key(s): 'dropuot'; it takes none" in result.output
