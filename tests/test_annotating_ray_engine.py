"""``tagpipe annotate --engine ray``: the same bytes as the local engine, unordered, resume, no Ray."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."


# ``python cli.py`` as started from a terminal: SIGINT unblocked and raising KeyboardInterrupt, whatever
# the test runner's own signal state, which a child inherits (two CI runs saw a Ctrl-C have no effect: rc 0)
AS_IN_A_TERMINAL = ("import runpy, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                    "signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = 'cli.py'; "
                    "runpy.run_path('cli.py', run_name='__main__')")


def annotate(*args: str):
    return CliRunner().invoke(cli, ["annotate", *args])


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture
def model(tiny_ner_model) -> str:
    return str(tiny_ner_model)


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) for the in-process runs of this module; the engine uses an
    instance it finds running and leaves it running."""
    pytest.importorskip("ray")
    from tagpipe.annotating.ray_engine import import_ray

    ray = import_ray(local=True)  # usage statistics off before Ray starts
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder of two inputs, 3,000 documents: text lines (with empty documents and a line that is
    not UTF-8) and JSONL records with their own ids and fields."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    text = "".join(f"Line {i} : {SENTENCE}\n" if i % 7 else "\n" for i in range(2000))
    (folder / "a.txt").write_bytes(text.encode() + b"bad \xff byte\n" + b"Berlin and Rome\n")
    (folder / "b.jsonl").write_text("".join(json.dumps({"id": f"doc-{i}", "text": f"{SENTENCE} ({i})", "n": i}) + "\n"
                                            for i in range(1000)))
    return folder


@pytest.fixture(scope="module")
def local_output(tiny_ner_model, corpus, tmp_path_factory) -> tuple[Path, str]:
    """The local engine's output on ``corpus`` and its warnings."""
    out = tmp_path_factory.mktemp("ray-local") / "out.jsonl"
    result = annotate(str(corpus), "-m", str(tiny_ner_model), "-o", str(out), "--batch-size", "64", "-q")
    assert result.exit_code == 0, result.output
    return out, result.stderr


def test_ray_output_is_byte_identical_to_the_local_engine(ray_instance, model, corpus, local_output, tmp_path):
    want, warnings = local_output
    out = tmp_path / "out.jsonl"
    result = annotate(str(corpus), "-m", model, "-o", str(out), "--batch-size", "64", "--engine", "ray",
                      "--num-workers", "2")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == want.read_bytes()
    assert len(lines(out)) == 3001
    assert warnings.strip() and warnings.strip() in result.stderr, "the driver reports bad lines as file:line"
    assert "annotated 3001 documents" in result.stderr and "1 bad lines skipped" in result.stderr
    assert "Traceback" not in result.output
    assert not re.search(r"\b(INFO|WARNING|ERROR)\b|core_worker", result.stderr), "Ray's logs stay in its files"
    assert not list(tmp_path.glob(".*")), "no partial file or sidecar left behind"


def test_unordered_writes_the_same_records(ray_instance, model, corpus, local_output, tmp_path):
    want, _ = local_output
    out = tmp_path / "out.jsonl"
    result = annotate(str(corpus), "-m", model, "-o", str(out), "--batch-size", "64", "--engine", "ray",
                      "--num-workers", "2", "--unordered", "-q")
    assert result.exit_code == 0, result.output
    keys = [(r["file"], r["id"]) for r in map(json.loads, lines(out))]
    assert len(set(keys)) == len(keys), "file and id name each record"
    assert sorted(lines(out)) == sorted(lines(want))


def test_resume_after_an_interrupted_ray_run(ray_instance, model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"Line {i} : {SENTENCE}\n" if i % 7 else "\n" for i in range(6000)))
    whole = tmp_path / "whole.jsonl"
    assert annotate(str(source), "-m", model, "-o", str(whole), "--batch-size", "8", "-q").exit_code == 0

    # a run with its own local Ray instance, interrupted like Ctrl-C once 800 documents are written
    out = tmp_path / "out.jsonl"
    sidecar = tmp_path / ".out.jsonl.resume.json"
    command = [sys.executable, "-c", AS_IN_A_TERMINAL, "annotate", str(source), "-m", model, "-o", str(out),
               "--batch-size", "8", "-q", "--checkpoint-seconds", "0", "--engine", "ray", "--num-workers", "2"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (sidecar.exists() and json.loads(sidecar.read_text() or "{}").get("docs", 0) >= 800):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.01)
    signals = [line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
               if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # a second Ctrl-C, as a user would press, if the first was lost
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, (f"rc {process.returncode}; child's signal masks when signalled {signals}; "
                                       f"output exists: {out.exists()}; stderr: {stderr!r}")
    done = json.loads(sidecar.read_text())["docs"]
    assert 0 < done < 6000 and f"stopped after {done} documents" in stderr
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr  # a real process: Ray's warnings would show
    assert not out.exists(), "the target appears only when the run is complete"

    resumed = annotate(str(source), "-m", model, "-o", str(out), "--batch-size", "8", "--resume", "--engine", "ray",
                       "--num-workers", "2")
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed after {done} documents" in resumed.stderr
    assert out.read_bytes() == whole.read_bytes()
    assert not sidecar.exists() and not (tmp_path / ".out.jsonl.partial").exists()


# -- without Ray, and refused options (no Ray instance needed) ---------------------------------------
def test_without_ray_one_line_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\n")
    result = annotate(str(source), "-m", model, "-o", str(tmp_path / "out.jsonl"), "--engine", "ray")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: --engine ray needs Ray Data") and line.endswith("pip install 'tagpipe[distributed]'")
    assert not list(tmp_path.glob("*out*")) and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(("options", "message"), [
    (["--num-workers", "2"], "need --engine ray"),
    (["--engine", "ray", "--n-process", "2"], "use --num-workers"),
    (["--engine", "ray", "--device", "cuda"], "--gpus-per-worker"),
    (["--engine", "ray", "--unordered", "-o", "out.conll"], "--unordered needs a JSONL output"),
    (["--engine", "ray", "--unordered", "-o", "out.jsonl", "--resume"], "cannot be resumed"),
])
def test_refused_options_are_one_line(options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text(f"{SENTENCE}\n")
    result = annotate("in.txt", *options)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_nothing_imports_ray_at_start():
    code = ("import sys\nfrom click.testing import CliRunner\nimport tagpipe, tagpipe.cli as cli, "
            "tagpipe.annotating.engine, "
            "tagpipe.annotating.ray_engine, tagpipe.commands.annotate\n"
            "assert CliRunner().invoke(cli.cli, ['annotate', '--help']).exit_code == 0\n"
            "assert CliRunner().invoke(cli.cli, ['--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
