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
    scores = json.loads(result.stdout)
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
    assert Path(english["path"], "config.json").is_file() and "90.69" in english["test"]
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


# -- one CLI grammar (issue 18 item 6) ------------------------------------------------------------

TINY_CONLLU = """# sent_id = 1
1\tthe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\t_\t_\t0\troot\t_\t_
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = 2
1\ta\ta\tDET\t_\t_\t2\tdet\t_\t_
2\tdog\tdog\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tran\trun\tVERB\t_\t_\t0\troot\t_\t_
4\thome\thome\tADV\t_\t_\t3\tadvmod\t_\t_

"""
SMALL_BILSTM = {"encoder_config": {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "hidden": 8}}


def _commands(group=cli, prefix=()):
    """Every (name path, command) reachable from ``group``, plugin commands included."""
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_tagpipe_alone_prints_the_help_and_exits_0():
    result = invoke()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:") and "annotate" in result.output and "parse" in result.output
    assert result.output == invoke("--help").output


def test_device_threads_json_quiet_are_one_definition_everywhere():
    from tagpipe.commands.options import DEVICE_HELP, QUIET_HELP, THREADS_HELP

    seen = {}
    for path, command in _commands():
        for param in command.params:
            if param.name == "device":
                assert (param.default, param.help) == ("auto", DEVICE_HELP), path
            elif param.name == "threads":
                assert (param.default, param.help) == (None, THREADS_HELP), path
            elif param.name == "as_json":
                assert param.opts == ["--json"] and param.is_flag, path  # help: the command's own words
            elif param.name == "quiet":
                assert (sorted(param.opts), param.help) == (["--quiet", "-q"], QUIET_HELP), path
            else:
                continue
            seen.setdefault(param.name, set()).add(" ".join(path))
    assert {"train", "evaluate", "annotate", "compare", "parse", "segment", "generate", "seq2seq-train",
            "triples-train", "triples-evaluate"} <= seen["device"] == seen["threads"]
    assert {"train", "evaluate", "compare", "parse", "segment", "info", "plugins"} <= seen["as_json"]
    assert {"train", "evaluate", "annotate", "compare", "parse", "segment"} <= seen["quiet"]


def test_threads_below_1_is_one_line_in_every_command(tiny_ner_model):
    for args in (["evaluate", str(TINY), "-m", str(tiny_ner_model)], ["annotate", "-", "-m", str(tiny_ner_model)],
                 ["parse", str(TINY), "--pretrained", str(TINY)]):
        result = invoke(*args, "--threads", "0")
        assert result.exit_code == 1, args
        assert result.output.strip() == "Error: --threads 0: must be at least 1", args


def test_annotate_device_defaults_to_auto_and_is_checked(tiny_ner_model):
    result = CliRunner().invoke(cli, ["annotate", "-", "-m", str(tiny_ner_model), "-q"], input="Angela Merkel .\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == ["Angela", "Merkel", "."]
    bad = invoke("annotate", "-", "-m", str(tiny_ner_model), "--device", "gpu0")
    assert bad.exit_code == 1 and "--device 'gpu0': not a device" in bad.output


def test_evaluate_shows_a_bar_on_stderr_unless_quiet_and_json_stays_clean(tiny_ner_model):
    loud = invoke("evaluate", str(TINY), "-m", str(tiny_ner_model), "--json")
    quiet = invoke("evaluate", str(TINY), "-m", str(tiny_ner_model), "--json", "-q")
    assert loud.exit_code == quiet.exit_code == 0, loud.output
    assert "evaluate" in loud.stderr and quiet.stderr == ""
    assert json.loads(loud.stdout) == json.loads(quiet.stdout)  # the batches under the bar are tag()'s own
    assert 0 <= json.loads(quiet.stdout)["f1"] <= 1


def test_parse_and_segment_json_are_fractions_with_a_bar_unless_quiet(tiny_bert_dir, tmp_path):
    corpus = tmp_path / "tiny.conllu"
    corpus.write_text(TINY_CONLLU)
    common = [str(corpus), "--pretrained", str(tiny_bert_dir), "--device", "cpu", "--threads", "1"]
    loud = invoke("parse", *common, "--json")
    quiet = invoke("parse", *common, "--json", "-q")
    text = invoke("parse", *common, "-q")
    assert loud.exit_code == quiet.exit_code == text.exit_code == 0, loud.output
    assert "parse" in loud.stderr and quiet.stderr == "" and text.stderr == ""
    report = json.loads(loud.stdout)
    assert report == json.loads(quiet.stdout)
    for key in ("uas", "uas_with_punct", "left_chain", "right_chain", "left_chain_with_punct",
                "right_chain_with_punct"):
        assert 0 <= report[key] <= 1, key
    # the table shows the same scores in percent; the chains are exact counts over 8 tokens
    assert f"UAS (punctuation excluded): {report['uas'] * 100:.2f}" in text.stdout
    assert report["left_chain_with_punct"] == 0.25 and report["right_chain_with_punct"] == 0.5

    seg = invoke("segment", *common, "--json")
    seg_quiet = invoke("segment", *common, "--json", "-q")
    assert seg.exit_code == seg_quiet.exit_code == 0, seg.output
    assert "segment" in seg.stderr and seg_quiet.stderr == ""
    scores = json.loads(seg_quiet.stdout)
    assert scores == json.loads(seg.stdout)
    assert all(0 <= scores[k] <= 1 for k in ("precision", "recall", "f1"))
    plain = invoke("segment", *common, "-q").stdout
    assert f"F1 {scores['f1'] * 100:.2f}" in plain


def test_train_json_is_one_summary_on_stdout(tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL_BILSTM))
    out = tmp_path / "m"
    result = invoke("train", "--config", str(config), "--train", str(TINY), "--dev", str(TINY), "--epochs", "2",
                    "--output", str(out), "--json", "-q", "--threads", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["task"] == "ner" and summary["output"] == str(out) and summary["best_epoch"] in (1, 2)
    assert set(summary["scores"]) == {"f1"} and 0 <= summary["scores"]["f1"] <= 1
    assert summary["seconds"] > 0 and summary["loss"]["train"] > 0
    assert "best dev score" in result.stderr and "epoch 1:" in result.stderr  # the log moved to stderr


def test_train_json_without_dev_has_no_score(tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL_BILSTM))
    result = invoke("train", "--config", str(config), "--train", str(TINY), "--epochs", "1", "--output",
                    str(tmp_path / "m"), "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 1 and summary["scores"] == {}


def test_compare_json_is_the_report_on_stdout(tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps({**SMALL_BILSTM, "epochs": 1}))
    out = tmp_path / "cmp"
    result = invoke("compare", "--config", str(config), "--train", str(TINY), "--test", str(TINY), "--encoder",
                    "bilstm", "--decoder", "softmax", "--output", str(out), "--json", "-q", "--threads", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "compare.json").read_text())
    (row,) = report["results"]
    assert row["decoder"] == "softmax" and 0 <= row["f1"]["mean"] <= 1
    assert "[bilstm-softmax-seed0]" in result.stderr or "bilstm-softmax" in result.stderr  # the log: stderr
