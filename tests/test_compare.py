"""``tagpipe compare``: a grid of encoders x decoders x seeds, its report, resuming, merging and errors."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli
from tagpipe.compare import measuring
from tagpipe.compare.grid import EncoderSpec, parse_encoder
from tagpipe.compare.report import spread
from tagpipe.errors import TagpipeError
from tests.conftest import TINY_BILSTM, TINY_CONLL

CORPORA = ["--train", str(TINY_CONLL), "--dev", str(TINY_CONLL), "--test", str(TINY_CONLL)]


@pytest.fixture(autouse=True)
def one_decoding_pass(monkeypatch):
    monkeypatch.setattr(measuring, "MIN_DECODE_SECONDS", 0.0)  # speed is not under test: decode the test set once


def invoke(*args: str):
    return CliRunner().invoke(cli, ["compare", *CORPORA, "--device", "cpu", "-q", *args])


def bilstm_grid(tmp_path, *extra: str):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"encoder_config": TINY_BILSTM, "batch_size": 8, "lr": 0.02}))
    return invoke("--config", str(config), "--encoder", "bilstm", "--decoder", "softmax,crf", "--seeds", "1,2",
                  "--epochs", "2", "--output", str(tmp_path / "out"), *extra)


def test_grid_report_resume_and_a_second_encoder(tmp_path, tiny_bert_dir):
    out = tmp_path / "out"
    first = bilstm_grid(tmp_path)
    assert first.exit_code == 0, first.output
    assert "4 cells, 0 finished, 4 to train" in first.output
    # a second run into the same folder, with settings of its own, adds the BERT rows
    second = invoke("--encoder", f"tiny=bert:{tiny_bert_dir}", "--decoder", "softmax", "--decoder", "crf",
                    "--seeds", "1", "--seeds", "2", "--epochs", "1", "--batch-size", "8", "--output", str(out))
    assert second.exit_code == 0, second.output

    report = json.loads((out / "compare.json").read_text())
    assert [(r["encoder"], r["decoder"], r["seeds"]) for r in report["results"]] == [
        ("bilstm", "softmax", [1, 2]), ("bilstm", "crf", [1, 2]), ("tiny", "softmax", [1, 2]), ("tiny", "crf", [1, 2])]
    assert len(report["cells"]) == 8
    for cell in report["cells"]:
        assert 0.0 <= cell["test"]["f1"] <= 1.0  # fractions, as `tagpipe evaluate --json`
        assert cell["parameters"] > 0 and cell["decode"]["tokens_per_second"] > 0 and cell["seconds_per_epoch"] > 0
        assert (out / "runs" / f"{cell['encoder']}-{cell['decoder']}-seed{cell['seed']}" / "config.json").is_file()
    bilstm_crf = report["results"][1]
    f1s = [c["test"]["f1"] for c in report["cells"] if (c["encoder"], c["decoder"]) == ("bilstm", "crf")]
    assert bilstm_crf["f1"]["mean"] == pytest.approx(sum(f1s) / 2)
    assert report["machine"]["cpus"] and report["machine"]["device"] == "cpu"

    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| bilstm", "softmax"], ["| bilstm", "crf"],
                                                      ["| tiny", "softmax"], ["| tiny", "crf"]]
    assert "±" in rows[0] and "torch" in table and "tagpipe compare --config" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun skips the finished cells; one interrupted after training resumes from its checkpoint
    results = sorted((out / "runs").glob("bilstm-*/result.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    interrupted = out / "runs" / "bilstm-crf-seed1" / "result.json"
    interrupted.unlink()
    again = bilstm_grid(tmp_path)
    assert again.exit_code == 0, again.output
    assert "4 cells, 3 finished, 1 to train" in again.output
    assert "bilstm-softmax-seed1: finished, skipped" in again.output and "resuming from" in again.output
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in results if p != interrupted)
    assert len(json.loads((out / "compare.json").read_text())["cells"]) == 8

    # other settings do not pass for finished cells: one line, nothing retrained
    changed = bilstm_grid(tmp_path, "--lr", "0.01")
    assert changed.exit_code == 1
    assert "trained with other settings" in changed.output and "lr 0.02 -> 0.01" in changed.output
    assert "--force" in changed.output and "Traceback" not in changed.output


def test_force_retrains_and_missing_matplotlib_skips_the_chart(tmp_path, monkeypatch):
    args = ["--config", str(tmp_path / "tiny.json"), "--encoder", "bilstm", "--decoder", "crf", "--epochs", "1",
            "--output", str(tmp_path / "out")]
    (tmp_path / "tiny.json").write_text(json.dumps({"encoder_config": TINY_BILSTM, "seed": 3}))
    assert invoke(*args).exit_code == 0
    result = tmp_path / "out" / "runs" / "bilstm-crf-seed3" / "result.json"  # the seed came from --config
    before = result.stat().st_mtime_ns
    (tmp_path / "out" / "compare.png").unlink()
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # import matplotlib(.x) raises ImportError
    forced = invoke(*args, "--force", "--epochs", "2")
    assert forced.exit_code == 0, forced.output
    assert result.stat().st_mtime_ns != before and json.loads(result.read_text())["epochs"] == 2
    assert "matplotlib is not installed" in forced.output
    assert (tmp_path / "out" / "compare.md").is_file() and not (tmp_path / "out" / "compare.png").exists()


def test_unknown_names_and_bad_specs_are_one_line(tmp_path):
    result = invoke("--encoder", "bilstm", "--decoder", "crf,viterbi", "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no decoder named 'viterbi'" in result.output and "tagpipe.crf.v1" in result.output
    assert not (tmp_path / "out").exists()  # refused before training anything
    result = invoke("--encoder", "bilstmx", "--decoder", "crf", "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no encoder named 'bilstmx'" in result.output
    out = ["--output", str(tmp_path / "out")]
    result = invoke("--encoder", "bilstm", "--encoder", "tagpipe.bilstm.v1", "--decoder", "crf", *out)
    assert result.exit_code == 1 and "distinct labels" in result.output
    result = invoke("--encoder", "bilstm", "--decoder", "crf", "--seeds", "one", *out)
    assert result.exit_code == 2 and "seeds are integers" in result.output
    assert invoke("--decoder", "crf", *out).exit_code == 2  # no encoder at all
    assert not (tmp_path / "out").exists()


def test_encoder_specs_and_spread():
    assert parse_encoder("bilstm") == EncoderSpec("bilstm", "tagpipe.bilstm.v1", None)
    assert parse_encoder("bert:/m/a=b") == EncoderSpec("bert", "tagpipe.bert.v1", "/m/a=b")
    assert parse_encoder("minilm=bert:/m/mini") == EncoderSpec("minilm", "tagpipe.bert.v1", "/m/mini")
    assert parse_encoder("x=myplugin.enc.v2") == EncoderSpec("x", "myplugin.enc.v2", None)
    with pytest.raises(TagpipeError, match="LABEL"):
        parse_encoder("a/b=bert:/m")
    assert spread([0.9]) == {"mean": 0.9, "std": None, "min": 0.9, "max": 0.9}
    assert spread([0.8, 0.9, 1.0])["std"] == pytest.approx(0.1)  # sample standard deviation (n - 1)


def test_a_grid_running_beside_another_reports_the_cells_it_finished(tmp_path, monkeypatch):
    """Two grids into one OUTPUT at once (two encoders on two cores): the report written last holds every
    finished cell, not only those of the grid that wrote it."""
    from tagpipe.compare import run

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"encoder_config": TINY_BILSTM, "batch_size": 8}))
    common = ["--config", str(config), "--decoder", "softmax", "--epochs", "1", "--seeds", "1"]
    assert invoke(*common, "--encoder", "other=bilstm", "--output", str(tmp_path / "elsewhere")).exit_code == 0
    real_run_cell = run.run_cell

    def beside_another(cell, *args, **kwargs):  # the other grid finishes its cell while this one trains
        shutil.copytree(tmp_path / "elsewhere" / "runs" / "other-softmax-seed1", out / "runs" / "other-softmax-seed1")
        return real_run_cell(cell, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(run, "run_cell", beside_another)
    result = invoke(*common, "--encoder", "bilstm", "--output", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compare.json").read_text())
    assert sorted(c["encoder"] for c in report["cells"]) == ["bilstm", "other"]
    assert sorted(r["encoder"] for r in report["results"]) == ["bilstm", "other"]
