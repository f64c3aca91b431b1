"""``tagpipe train`` under bad input, faults and hostile files (issue 17, the training side).

- a table of options refused before any file is read or model built (one line, exit 1, output untouched);
- no code from data: a crafted pickle in each file a resume reads never runs (``train --resume`` and
  ``compare`` resuming a cell);
- atomic checkpoints: a SIGKILL at every write point, then ``--resume``: the same final weights as an
  uninterrupted run, or one line refusing;
- resume by content: other settings or corpora are refused, listing what differs;
- an over-long training sentence is refused fast, with its file and line;
- inherited WORLD_SIZE & co. outside torchrun: one warning line and a single-process run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from tagpipe.cli import cli
from tagpipe.faults import KILL_AT_ENV
from tagpipe.training import checkpoints, distributed

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "corpora" / "samples" / "tiny.conll"
SMALL = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16}
#: one thread and no --dev: fast, and the model is saved every epoch the loss falls
BASE = {"encoder_config": SMALL, "batch_size": 8, "lr": 0.01, "device": "cpu", "threads": 1, "seed": 3,
        "patience": 100}
LAUNCH = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
          "TORCHELASTIC_USE_AGENT_STORE", distributed.OPT_IN_ENV, KILL_AT_ENV)


def config_file(folder: Path, **overrides) -> Path:
    path = folder / "train.json"
    path.write_text(json.dumps({**BASE, **overrides}))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args, "-q"])


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def subprocess_train(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCH}
    return subprocess.run([sys.executable, "cli.py", "train", *args, "-q"], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**clean, "OMP_NUM_THREADS": "1", **(env or {})})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{a} and {b} hold different weights"


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under ``path`` (or ``path`` itself) with its bytes; None when it does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- validation before working --------------------------------------------------------------------
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (a read-only folder; as root, /proc/sys)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/proc/sys")
    try:
        os.close(os.open(folder / ".tagpipe-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return folder
    pytest.skip("no folder here is read-only to root")


# case, arguments ({tmp}: the test's folder; {train}: a copy of tiny.conll there; {missing}: no such corpus),
# exit code, message fragment, the path that must stay as it was
REFUSED = [
    ("output is a file", ["--train", "{train}", "--output", "{tmp}/notes.txt"], 1, "--output {tmp}/notes.txt: a file",
     "{tmp}/notes.txt"),
    ("output is the training file", ["--train", "{train}", "--output", "{train}"], 1, "is the --train file", "{train}"),
    ("output inside the training file", ["--train", "{train}", "--output", "{train}/model"], 1,
     "inside the --train file", "{train}"),
    ("output not writable", ["--train", "{train}", "--output", "{unwritable}/model"], 1, "cannot create files in",
     "{unwritable}/model"),
    ("lr nan", ["--train", "{missing}", "--lr", "nan"], 1, "--lr nan: must be a finite number above 0", "{tmp}/out"),
    ("lr inf", ["--train", "{missing}", "--lr", "inf"], 1, "--lr inf: must be a finite number above 0", "{tmp}/out"),
    ("lr zero", ["--train", "{missing}", "--lr", "0"], 1, "--lr 0.0: must be a finite number above 0", "{tmp}/out"),
    ("lr negative", ["--train", "{missing}", "--lr", "-0.1"], 1, "--lr -0.1: must be", "{tmp}/out"),
    ("encoder lr nan", ["--train", "{missing}", "--encoder-lr", "nan"], 1, "--encoder-lr nan: must be", "{tmp}/out"),
    ("threads zero", ["--train", "{missing}", "--threads", "0"], 1, "--threads 0: must be at least 1", "{tmp}/out"),
    ("threads negative", ["--train", "{missing}", "--threads", "-2"], 1, "--threads -2: must be at least 1",
     "{tmp}/out"),
    ("epochs zero", ["--train", "{missing}", "--epochs", "0"], 1, "--epochs 0: must be at least 1", "{tmp}/out"),
    ("batch size zero", ["--train", "{missing}", "--batch-size", "0"], 1, "--batch-size 0: must be at least 1",
     "{tmp}/out"),
    ("accumulate zero", ["--train", "{missing}", "--accumulate", "0"], 1, "--accumulate 0: must be at least 1",
     "{tmp}/out"),
    ("patience negative", ["--train", "{missing}", "--patience", "-1"], 1, "--patience -1: must be at least 0",
     "{tmp}/out"),
    ("max sentence length zero", ["--train", "{missing}", "--max-sentence-length", "0"], 1,
     "--max-sentence-length 0: must be at least 1", "{tmp}/out"),
    ("config file lr", ["--train", "{missing}", "--config", "{tmp}/bad-lr.json"], 1, "--lr -1.0: must be", "{tmp}/out"),
    ("config file threads", ["--train", "{missing}", "--config", "{tmp}/bad-threads.toml"], 1,
     "--threads 0: must be at least 1", "{tmp}/out"),
    ("config file warmup", ["--train", "{missing}", "--config", "{tmp}/bad-warmup.json"], 1,
     "warmup -0.5: must be a finite number at least 0", "{tmp}/out"),
    ("vectors missing", ["--train", "{missing}", "--vectors", "{tmp}/glove.txt"], 1,
     "--vectors {tmp}/glove.txt: no such file or folder", "{tmp}/out"),
    ("vectors empty", ["--train", "{missing}", "--vectors", "{tmp}/empty.txt"], 1,
     "--vectors {tmp}/empty.txt: the file is empty", "{tmp}/out"),
    ("allow-change of the learning rate", ["--train", "{missing}", "--allow-change", "epochs,lr"], 1,
     "--allow-change lr: only epochs, patience", "{tmp}/out"),
]


@pytest.mark.parametrize(("case", "args", "code", "fragment", "unchanged"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_anything_is_read(tmp_path, case, args, code, fragment, unchanged):
    train = tmp_path / "train.conll"
    shutil.copy(TINY, train)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "bad-lr.json").write_text(json.dumps({"lr": -1}))
    (tmp_path / "bad-threads.toml").write_text("threads = 0\n")
    (tmp_path / "bad-warmup.json").write_text(json.dumps({"warmup": -0.5}))
    (tmp_path / "empty.txt").write_bytes(b"")
    names = {"tmp": str(tmp_path), "train": str(train), "missing": str(tmp_path / "missing.conll")}
    if "{unwritable}" in " ".join(args):
        names["unwritable"] = str(unwritable_folder(tmp_path))
    args = [a.format(**names) for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    watched = Path(unchanged.format(**names))
    before = snapshot(watched)
    started = time.perf_counter()
    result = invoke(*args)
    assert result.exit_code == code
    line = one_line(result.output)
    assert fragment.format(**names) in line, line
    assert "missing.conll" not in line  # refused before the (missing) corpus was opened
    assert snapshot(watched) == before
    assert time.perf_counter() - started < 10


def test_the_python_api_checks_the_same(tmp_path):
    from tagpipe.errors import TagpipeError
    from tagpipe.training.loop import Trainer
    from tagpipe.training.settings import TrainSettings

    with pytest.raises(TagpipeError, match=r"^--lr nan: must be a finite number above 0$"):
        TrainSettings(train=str(TINY), lr=float("nan"))
    with pytest.raises(TagpipeError, match=r"^--threads 0: must be at least 1$"):
        TrainSettings.from_dict({"train": str(TINY), "threads": 0})
    (tmp_path / "notes.txt").write_text("my notes\n")
    settings = TrainSettings(train=str(tmp_path / "missing.conll"), output=str(tmp_path / "notes.txt"), device="cpu")
    with pytest.raises(TagpipeError, match="a file, not a model folder"):  # before the missing corpus is opened
        Trainer(settings, log=lambda _: None, progress=False).run()
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_vectors_of_an_unknown_layout_are_refused_in_one_line_before_training(tmp_path):
    (tmp_path / "vectors").mkdir()
    result = invoke("--train", str(TINY), "--vectors", str(tmp_path / "vectors"), "--output", str(tmp_path / "m"))
    assert result.exit_code == 1 and "without vocab/vectors" in one_line(result.output)
    assert not (tmp_path / "m").exists()


def test_vectors_of_another_size_than_word_dim_are_one_line(tmp_path):
    (tmp_path / "glove.txt").write_text("the 1 1\n", encoding="utf-8")
    result = invoke("--train", str(TINY), "--config", str(config_file(tmp_path)), "--vectors",
                    str(tmp_path / "glove.txt"), "--output", str(tmp_path / "m"))
    line = one_line(result.output)
    assert result.exit_code == 1 and "word_dim=16 but" in line and "leave word_dim out" in line


def test_train_with_vectors_keeps_them_for_unseen_words(tmp_path):
    (tmp_path / "glove.txt").write_text("the 1 1\nzanzibar 2 2\n", encoding="utf-8")
    config = config_file(tmp_path, epochs=1, encoder_config={k: v for k, v in SMALL.items() if k != "word_dim"})
    result = invoke("--train", str(TINY), "--config", str(config), "--vectors", str(tmp_path / "glove.txt"),
                    "--output", str(tmp_path / "m"))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["encoder"]["config"]["pretrained_vectors"] == str(tmp_path / "glove.txt")
    assert saved["encoder"]["config"]["word_dim"] == 2 and saved["meta"]["settings"]["vectors"]
    assert "zanzibar" in json.loads((tmp_path / "m" / "vocab.json").read_text())["words"]


def test_an_over_long_training_sentence_is_refused_fast_with_its_line(tmp_path):
    corpus = tmp_path / "long.conll"
    normal = TINY.read_text()
    start = normal.count("\n") + 1  # the long sentence's first line
    corpus.write_text(normal + "".join(f"w{i} O\n" for i in range(50_000)) + "\n")
    started = time.perf_counter()
    result = invoke("--train", str(corpus), "--output", str(tmp_path / "out"), "--device", "cpu")
    assert result.exit_code == 1
    line = one_line(result.output)
    assert f"{corpus}:{start}: a sentence of 50,000 tokens, longer than --max-sentence-length 1000" in line
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "out").exists()
    # the limit is a setting: a lower one refuses the sample's own sentences, in the dev corpus too
    lower = invoke("--train", str(TINY), "--dev", str(corpus), "--output", str(tmp_path / "out"),
                   "--device", "cpu", "--max-sentence-length", "5")
    assert lower.exit_code == 1 and f"{TINY}:" in one_line(lower.output) and "--max-sentence-length 5" in lower.output


# -- no code from data ------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: a stand-in for any code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A model folder after 1 epoch (with its checkpoint), copied by each test that changes it."""
    folder = tmp_path_factory.mktemp("trained")
    shutil.copy(TINY, folder / "train.conll")
    result = invoke("--config", str(config_file(folder)), "--train", str(folder / "train.conll"), "--epochs", "1",
                    "--output", str(folder / "model"))
    assert result.exit_code == 0, result.output
    return folder


def copy_of(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def resume(run: Path, *args: str):
    """``--resume`` of the model in ``run`` with its own settings and corpus (the paths of ``trained``)."""
    settings = json.loads((run / "model" / "config.json").read_text())["meta"]["settings"]
    return invoke("--config", str(run / "train.json"), "--train", settings["train"], "--epochs", "2", "--output",
                  str(run / "model"), "--resume", *args)


def reseal(folder: Path) -> None:
    """Rewrite the manifest for the files as they are now: a hostile checkpoint that is consistent."""
    path = folder / checkpoints.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["files"] = {name: checkpoints._file_record(folder / name) for name in manifest["files"]}
    path.write_text(json.dumps(manifest))


def plant(path: Path, marker: Path, how: str) -> None:
    if how == "torch.save":
        torch.save({"epoch": 1, "optimizer": Payload(marker)}, path)
    else:  # a bare pickle, as torch's legacy format
        path.write_bytes(pickle.dumps({"epoch": 1, "optimizer": Payload(marker)}))


PLANTED = [  # file a resume reads, how the payload is written, whether the manifest is resealed, message
    ("trainer_state.pt", "torch.save", True, "refused, not a trainer state of plain data (it would call"),
    ("trainer_state.pt", "pickle", True, "refused, not a trainer state of plain data"),
    ("trainer_state.pt", "torch.save", False, "does not match manifest.json"),
    ("model.safetensors", "torch.save", True, "model.safetensors"),
    ("config.json", "pickle", True, "config.json"),
    ("vocab.json", "pickle", True, "vocab.json"),
    ("manifest.json", "pickle", False, "manifest.json: not a readable manifest"),
]


@pytest.mark.parametrize(("name", "how", "sealed", "fragment"), PLANTED,
                         ids=[f"{n}-{h}-{'resealed' if s else 'as-is'}" for n, h, s, _ in PLANTED])
def test_a_crafted_pickle_in_a_checkpoint_never_runs(trained, tmp_path, name, how, sealed, fragment):
    run = copy_of(trained, tmp_path)
    checkpoint = run / "model" / "checkpoint"
    marker = tmp_path / "pwned"
    plant(checkpoint / name, marker, how)
    if sealed:
        reseal(checkpoint)
    result = resume(run)
    assert not marker.exists()
    assert result.exit_code == 1
    line = one_line(result.output)
    assert "--resume" in line and fragment in line, line
    # the payload is live: an unrestricted unpickler runs it
    if name == "trainer_state.pt":
        if how == "torch.save":
            torch.load(checkpoint / name, weights_only=False)
        else:
            pickle.loads((checkpoint / name).read_bytes())
        assert marker.exists()


def test_plain_data_that_is_no_checkpoint_of_this_run_is_one_line(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    checkpoint = run / "model" / "checkpoint"
    state = torch.load(checkpoint / checkpoints.STATE_FILE, weights_only=True)
    torch.save({**state, "optimizer": [1, 2, 3]}, checkpoint / checkpoints.STATE_FILE)  # plain, but no optimizer's
    reseal(checkpoint)
    result = resume(run)  # found only once the optimizer is built: after the line saying it resumes
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "trainer_state.pt does not fit this model and optimizer" in result.output.splitlines()[-1]
    manifest = json.loads((checkpoint / checkpoints.MANIFEST_FILE).read_text())
    (checkpoint / checkpoints.MANIFEST_FILE).write_text(json.dumps({**manifest, "data": {"train": "x"}}))
    assert "manifest.json: not a tagpipe checkpoint manifest" in one_line(resume(run).output)


def test_compare_resuming_a_cell_never_runs_a_crafted_pickle(tmp_path):
    args = ["compare", "--train", str(TINY), "--test", str(TINY), "--config", str(config_file(tmp_path)),
            "--encoder", "bilstm", "--decoder", "softmax", "--seeds", "1", "--epochs", "1", "--output",
            str(tmp_path / "out"), "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    cell = tmp_path / "out" / "runs" / "bilstm-softmax-seed1"
    (cell / "result.json").unlink()  # interrupted after training: the rerun resumes from the checkpoint
    marker = tmp_path / "pwned"
    plant(cell / "checkpoint" / checkpoints.STATE_FILE, marker, "torch.save")
    reseal(cell / "checkpoint")
    result = CliRunner().invoke(cli, args)
    assert not marker.exists()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "refused, not a trainer state of plain data" in result.output and "1 of 1 cells failed" in result.output
    # a checkpoint that does not match its manifest is not resumed at all: the cell trains afresh
    plant(cell / "checkpoint" / checkpoints.STATE_FILE, tmp_path / "other-marker", "torch.save")
    afresh = CliRunner().invoke(cli, args)
    assert afresh.exit_code == 0, afresh.output
    assert "not resumed, trained afresh" in afresh.output and "does not match manifest.json" in afresh.output
    assert not marker.exists() and not (tmp_path / "other-marker").exists() and (cell / "result.json").is_file()


# -- atomic checkpoints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess_train("--config", str(config_file(folder)), "--train", str(TINY), "--epochs", "3",
                              "--output", str(folder / "model"))
    assert result.returncode == 0, result.stderr
    return folder / "model"


KILLS = [  # write point (@N: its N-th arrival), what --resume then does
    ("best-model@2", "resumes"),  # the best model of epoch 2 saved, its checkpoint not yet
    ("checkpoint-model@2", "resumes"),  # the new checkpoint's weights written, not its trainer state
    ("checkpoint-state@2", "resumes"),  # weights and trainer state written, not the manifest
    ("checkpoint-manifest@2", "resumes"),  # the new checkpoint complete beside the old one
    ("checkpoint-swap@1", "resumes"),  # epoch 2's: the old checkpoint moved aside, the new one not yet in place
    ("checkpoint-done@1", "resumes"),  # epoch 2's: the new checkpoint in place, the old one not yet removed
    ("checkpoint-done@2", "resumes"),  # the last epoch's: nothing left to train, the old checkpoint removed
    ("checkpoint-manifest@1", "resumes"),  # the first checkpoint complete, never moved into place
    ("checkpoint-state@1", "refuses"),  # no complete checkpoint yet
]


@pytest.mark.parametrize(("point", "outcome"), KILLS, ids=[k[0] for k in KILLS])
def test_a_kill_at_any_write_point_resumes_to_the_same_model_or_refuses(uninterrupted, tmp_path, point, outcome):
    args = ["--config", str(config_file(tmp_path)), "--train", str(TINY), "--epochs", "3", "--output",
            str(tmp_path / "model")]
    killed = subprocess_train(*args, env={KILL_AT_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = subprocess_train(*args, "--resume")
    if outcome == "refuses":
        assert resumed.returncode == 1
        assert "--resume: no checkpoint in" in one_line(resumed.stderr)
        return
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "model", uninterrupted)  # the best model
    assert_same_weights(tmp_path / "model" / "checkpoint", uninterrupted / "checkpoint")  # the last epoch
    leftovers = {checkpoints.STAGING_DIR, checkpoints.PREVIOUS_DIR} & {p.name for p in (tmp_path / "model").iterdir()}
    assert not leftovers


def test_a_checkpoint_changed_after_it_was_written_is_refused(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    checkpoint = run / "model" / "checkpoint"
    weights_file = checkpoint / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights_file.write_bytes(bytes(data))
    line = one_line(resume(run).output)
    assert "model.safetensors does not match manifest.json" in line
    weights_file.write_bytes((trained / "model" / "checkpoint" / "model.safetensors").read_bytes())
    (checkpoint / "added_tokens.json").write_text("{}")  # a file no save wrote, that a loader might read
    assert "added_tokens.json: not part of the checkpoint" in one_line(resume(run).output)


# -- resume by content ------------------------------------------------------------------------------
CHANGED = [  # case, options of the resume, config overrides, message fragment
    ("lr", ["--lr", "0.02"], {}, "--lr: 0.01 (checkpoint) vs 0.02 (now)"),
    ("decoder", ["--decoder", "softmax"], {}, "--decoder: tagpipe.crf.v1 (checkpoint) vs tagpipe.softmax.v1 (now)"),
    ("encoder config", [], {"encoder_config": {**SMALL, "hidden": 8}}, "encoder_config: {"),
    ("batch size", ["--batch-size", "4"], {}, "--batch-size: 8 (checkpoint) vs 4 (now)"),
    ("dev corpus added", ["--dev", str(TINY)], {}, "--dev: none (checkpoint) vs"),
    ("other training corpus", ["--train", str(REPO / "tests" / "fixtures" / "model_v0_1_0_news.jsonl")], {},
     "other content"),
    ("epochs not allowed", ["--allow-change", "none"], {}, "--epochs: 1 (checkpoint) vs 2 (now)"),
    ("save dtype not allowed", ["--save-dtype", "float16"], {}, "(or name save-dtype in --allow-change)"),
]


@pytest.mark.parametrize(("case", "args", "overrides", "fragment"), CHANGED, ids=[c[0] for c in CHANGED])
def test_resume_refuses_other_settings_or_data_listing_them(trained, tmp_path, case, args, overrides, fragment):
    run = copy_of(trained, tmp_path)
    config_file(run, **overrides)
    before = snapshot(run / "model")
    result = resume(run, *args)
    assert result.exit_code == 1
    line = one_line(result.output)
    assert line.startswith("Error: --resume:") and "belongs to another run" in line and fragment in line, line
    assert snapshot(run / "model") == before


def test_resume_refuses_a_training_file_whose_content_changed(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    settings = json.loads((run / "model" / "checkpoint" / checkpoints.MANIFEST_FILE).read_text())["settings"]
    train = Path(settings["train"])
    original = train.read_bytes()
    try:
        train.write_bytes(original.replace(b"Merkel NNP I-NP I-PER", b"Merkel NNP I-NP I-ORG"))
        line = one_line(resume(run).output)
    finally:
        train.write_bytes(original)
    assert f"--train {train} other content (size {len(original)} -> " in line, line


def test_resume_accepts_allowed_changes_and_records_them(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    moved = tmp_path / "moved.conll"  # the same corpus under another name
    shutil.copy(run / "train.conll", moved)
    result = invoke("--config", str(run / "train.json"), "--train", str(moved), "--epochs", "2", "--output",
                    str(run / "model"), "--resume", "--save-dtype", "float16",
                    "--allow-change", "epochs,save-dtype")
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "model" / "checkpoint" / "config.json").read_text())["meta"]
    assert meta["settings"]["epochs"] == 2 and meta["settings"]["save_dtype"] == "float16"
    changed = meta["resumed"][0]["changed"]
    assert meta["resumed"][0]["after_epoch"] == 1
    assert changed["epochs"] == [1, 2] and changed["save_dtype"] == ["float32", "float16"]
    assert changed["train"][1] == str(moved)


# -- distributed only under torchrun ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_inherited_launch_variables_outside_torchrun_train_in_one_process(tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    started = time.perf_counter()
    result = subprocess_train("--config", str(config_file(tmp_path)), "--train", str(TINY), "--epochs", "1",
                              "--output", str(tmp_path / "model"), env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "ignored" in line]
    assert len(warnings) == 1 and "WORLD_SIZE=2" in warnings[0] and "not launched by torchrun" in warnings[0]
    assert "no --dev: kept epoch 1" in result.stdout  # this process is the whole run: it reports and writes
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert time.perf_counter() - started < 60


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads Linux's table of sockets")
def test_rank_zero_listens_on_master_addr_only(monkeypatch):
    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    store = distributed.rendezvous_store(0, 1)
    store.set("key", "value")
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    listening = [line.split()[1] for table in tables if table.is_file() for line in table.read_text().splitlines()[1:]
                 if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"]  # 0A: LISTEN
    assert listening == [f"0100007F:{port:04X}"]  # 127.0.0.1 alone (torch's own store listens on [::], every one)
    del store


def test_an_explicit_request_joins_a_process_group_without_torchrun(tmp_path):
    port = free_port()
    config = config_file(tmp_path)
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCH}
    ranks = []
    for rank in (0, 1):
        env = {**clean, "OMP_NUM_THREADS": "1", distributed.OPT_IN_ENV: "1", "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen([sys.executable, "cli.py", "train", "--config", str(config), "--train",
                                       str(TINY), "--epochs", "1", "--output", str(tmp_path / "model"), "-q"],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [process.communicate(timeout=120) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in ranks] == [0, 0], outputs
    assert "x 2 ranks" in outputs[0][0] and "no --dev: kept epoch 1" in outputs[0][0] and not outputs[1][0]
