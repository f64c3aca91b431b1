"""``tagpipe annotate`` under bad input, faults and hostile files (issue 17): refused outputs and
inputs (a table), one owner per output, resume by content, a kill at every write point, input
detection (BOMs, .txt, FIFOs), HTML escaping, and the tags of tagging models in every output."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli
from tests.conftest import TINY_BILSTM, TINY_CONLL

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."


def annotate(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, ["annotate", *map(str, args)], input=input)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def tree(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its bytes (FIFOs and folders by kind: never opened)."""
    found: dict[str, object] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            kind = "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "special"
            found[str(path.relative_to(root))] = path.read_bytes() if kind == "file" else kind
    return found


@pytest.fixture
def model(tiny_ner_model) -> str:
    return str(tiny_ner_model)


@pytest.fixture(scope="module")
def tag_model(tmp_path_factory) -> Path:
    """A tiny ``--task tag`` model on the POS column (1) of the sample corpus."""
    folder = tmp_path_factory.mktemp("tag")
    config = folder / "small.json"
    config.write_text(json.dumps({"encoder_config": TINY_BILSTM}))
    result = CliRunner().invoke(cli, [
        "train", "--config", str(config), "--task", "tag", "--tag-column", "1", "--train", str(TINY_CONLL),
        "--dev", str(TINY_CONLL), "--epochs", "12", "--batch-size", "4", "--lr", "0.02", "--device", "cpu",
        "--output", str(folder / "model"), "-q"])
    assert result.exit_code == 0, result.output
    return folder / "model"


# -- refused before any work: the table --------------------------------------------------------
def _text(tmp: Path, name: str = "in.txt", lines: int = 3) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{SENTENCE} {i}\n" for i in range(lines)))
    return path


def _no_model(tmp: Path) -> list[str]:
    """A model that does not exist: the case's own message proves the model was never loaded."""
    return ["-m", str(tmp / "no-model")]


def _readonly_target(tmp: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        return folder / "out.jsonl"
    for folder in ("/sys", "/proc"):  # root writes anywhere but on a read-only file system
        try:
            with open(Path(folder) / ".tagpipe-probe", "w"):
                pass
        except OSError:
            return Path(folder) / "tagpipe-out.jsonl"
    pytest.skip("no read-only folder to write into")


def _case_folder(tmp, model, keep):
    (tmp / "out.jsonl").mkdir()
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl"]


def _case_readonly(tmp, model, keep):
    return [_text(tmp), *_no_model(tmp), "-o", _readonly_target(tmp)]


def _case_output_is_input(tmp, model, keep):
    source = tmp / "in.jsonl"
    source.write_text(json.dumps({"text": SENTENCE}) + "\n")
    return [source, *_no_model(tmp), "-o", source]


def _case_output_inside_input_folder(tmp, model, keep):
    _text(tmp, "corpus/a.txt")
    (tmp / "corpus" / "out.jsonl").write_text(json.dumps({"text": "an earlier run's output"}) + "\n")
    return [tmp / "corpus", *_no_model(tmp), "-o", tmp / "corpus" / "out.jsonl"]


def _case_output_fifo(tmp, model, keep):
    os.mkfifo(tmp / "out.jsonl")
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl"]


def _case_html_plain_file(tmp, model, keep):
    (tmp / "notes.txt").write_text("my notes\n")
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl", "--html", tmp / "notes.txt"]


def _case_html_not_html(tmp, model, keep):
    (tmp / "report.html").write_text("quarterly numbers: 1, 2, 3\n")
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl", "--html", tmp / "report.html"]


def _case_html_folder_named_html(tmp, model, keep):
    (tmp / "pages.html").mkdir()
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl", "--html", tmp / "pages.html"]


def _case_html_same_as_output(tmp, model, keep):
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl", "--html", tmp / "out.jsonl"]


def _case_locked(tmp, model, keep):
    fd = os.open(tmp / ".out.jsonl.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running annotate holds it
    os.write(fd, b"4242\n")
    keep.append(fd)
    return [_text(tmp), *_no_model(tmp), "-o", tmp / "out.jsonl", "--resume"]


def _stopped_run(tmp: Path, model: str) -> tuple[Path, list[str]]:
    """A run stopped by a bad 6th line after 4 documents were checkpointed (partial file and sidecar kept)."""
    source = tmp / "in.txt"
    source.write_bytes("".join(f"{SENTENCE} {i}\n" for i in range(5)).encode() + b"bad \xff\n" + b"Berlin\n")
    args = [source, "-m", model, "-o", tmp / "out.jsonl", "--batch-size", "2", "--checkpoint-seconds", "0"]
    stopped = annotate(*args, "--strict")
    assert stopped.exit_code == 1 and (tmp / ".out.jsonl.resume.json").exists(), stopped.output
    return source, [*args, "--resume"]


def _case_resume_edited(tmp, model, keep):
    source, args = _stopped_run(tmp, model)
    source.write_bytes(source.read_bytes().replace(b"Angela", b"Angelo", 1))  # document 1, already written
    return args


def _case_resume_shortened(tmp, model, keep):
    source, args = _stopped_run(tmp, model)
    source.write_text(f"{SENTENCE} 0\n{SENTENCE} 1\n")
    return args


def _case_broken_utf16(tmp, model, keep):
    (tmp / "in.txt").write_bytes("Paris\n".encode("utf-16") + b"\x00\xd8")  # a lone high surrogate
    return [tmp / "in.txt", "-m", model, "-o", tmp / "out.jsonl"]


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, str, list], list]  # (tmp, model, fds to close) -> annotate's arguments
    code: int
    fragment: str
    unchanged: bool = True  # every file under tmp is as the setup left it (no output, partial or lock)


CASES = [
    Case("output is a folder", _case_folder, 1, "out.jsonl: is a folder"),
    Case("output in a read-only folder", _case_readonly, 1, "cannot write in"),
    Case("output is an input", _case_output_is_input, 1, "in.jsonl: is also an input"),
    Case("output inside an input folder", _case_output_inside_input_folder, 1, "is also an input"),
    Case("output is a FIFO", _case_output_fifo, 1, "not a regular file"),
    Case("--html an existing plain file", _case_html_plain_file, 1, "notes.txt: an existing file that is not an HTML"),
    Case("--html .html that is not HTML", _case_html_not_html, 1, "exists and is not an HTML page"),
    Case("--html .html that is a folder", _case_html_folder_named_html, 1, "pages.html: is a folder"),
    Case("--html the same path as --output", _case_html_same_as_output, 1, "the same path as --output"),
    Case("output held by another run", _case_locked, 1, "another tagpipe annotate run is writing it (process 4242"),
    Case("--resume after the input was edited", _case_resume_edited, 1, "cannot resume: the input changed"),
    Case("--resume after the input lost documents", _case_resume_shortened, 1, "fewer than the 4 documents"),
    Case("UTF-16 with a broken surrogate", _case_broken_utf16, 1, "in.txt: not valid UTF-16 text"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_one_line_leaving_files_alone(case: Case, tiny_ner_model, tmp_path):
    keep: list[int] = []
    args = case.setup(tmp_path, str(tiny_ner_model), keep)
    before = tree(tmp_path)
    try:
        result = annotate(*args)
    finally:
        for fd in keep:
            os.close(fd)
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o700)
    assert result.exit_code == case.code, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and case.fragment in last, result.stderr
    assert "Traceback" not in result.output
    if case.unchanged:
        assert tree(tmp_path) == before


# -- one owner per output --------------------------------------------------------------------
def test_a_second_run_on_the_same_output_is_refused_at_once(model, tmp_path):
    source = _text(tmp_path, lines=3000)
    options = ["-m", model, "--batch-size", "8", "-q"]
    solo = annotate(source, *options, "-o", tmp_path / "solo.jsonl", "--html", tmp_path / "solo.html")
    assert solo.exit_code == 0, solo.output

    out, page = tmp_path / "out.jsonl", tmp_path / "page.html"
    first = subprocess.Popen([sys.executable, "cli.py", "annotate", str(source), *options, "-o", str(out),
                              "--html", str(page)], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (tmp_path / ".out.jsonl.partial").exists():  # the first run holds the locks and is writing
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.01)
    started = time.monotonic()
    second = annotate(source, *options, "-o", out)
    third = annotate(source, *options, "-o", tmp_path / "other.jsonl", "--html", page)
    assert time.monotonic() - started < 10, "refused before any model is loaded"
    assert first.poll() is None, "the first run was still running while the others were refused"
    assert second.exit_code == 1 and "another tagpipe annotate run is writing it" in second.stderr
    assert f"--output {out}" in second.stderr and f"process {first.pid}" in second.stderr
    assert third.exit_code == 1 and f"--html {page}: another tagpipe annotate run" in third.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert out.read_bytes() == (tmp_path / "solo.jsonl").read_bytes()
    assert page.read_bytes() == (tmp_path / "solo.html").read_bytes()
    assert not (tmp_path / "other.jsonl").exists()
    assert not list(tmp_path.glob(".*")), "no partial file, sidecar or lock left behind"


# -- resume by content -----------------------------------------------------------------------
def test_resume_checks_the_documents_done_not_the_rest(model, tmp_path):
    source, args = _stopped_run(tmp_path, model)
    partial = (tmp_path / ".out.jsonl.partial").read_bytes()
    original = source.read_bytes()
    source.write_bytes(original.replace(b"Angela", b"Angelo", 1))
    refused = annotate(*args)
    assert refused.exit_code == 1 and "its first 4 documents are not the ones annotated" in refused.stderr
    assert (tmp_path / ".out.jsonl.partial").read_bytes() == partial, "a refused resume leaves the partial file"

    fixed = original.replace(b"bad \xff\n", b"Rome\n")  # the bad line comes after the documents done
    source.write_bytes(fixed)
    resumed = annotate(*args)
    assert resumed.exit_code == 0 and "resumed after 4 documents" in resumed.stderr, resumed.output
    whole = tmp_path / "whole.jsonl"
    assert annotate(source, "-m", model, "-o", whole, "-q").exit_code == 0
    assert (tmp_path / "out.jsonl").read_bytes() == whole.read_bytes()


# -- a kill at every write point -------------------------------------------------------------
KILLS = ["annotate-write@2", "annotate-flush@2", "annotate-sidecar@2", "annotate-flush@6", "annotate-sidecar@6",
         "annotate-finalize@1", "annotate-finalize@2"]  # TAGPIPE_TEST_KILL_AT=NAME@N: the N-th pass through NAME
FINISHED = ("annotate-sidecar@6", "annotate-finalize@1", "annotate-finalize@2")  # after the last sidecar


def test_every_write_point_is_killed_at():
    from tagpipe.annotating.resume import KILL_POINTS

    assert {k.partition("@")[0] for k in KILLS} == set(KILL_POINTS)


@pytest.fixture(scope="module")
def kill_input(tmp_path_factory, tiny_ner_model) -> tuple[Path, list[str], bytes, bytes]:
    """40 documents in 5 batches of 8 (so the 6th flush and sidecar are the final ones), and a solo run's outputs."""
    folder = tmp_path_factory.mktemp("kill")
    source = folder / "in.txt"
    source.write_text("".join(f"Line {i} : {SENTENCE}\n" if i % 7 else "\n" for i in range(40)))
    options = [str(source), "-m", str(tiny_ner_model), "--batch-size", "8", "-q", "--checkpoint-seconds", "0"]
    assert annotate(*options, "-o", folder / "solo.jsonl", "--html", folder / "solo.html").exit_code == 0
    return source, options, (folder / "solo.jsonl").read_bytes(), (folder / "solo.html").read_bytes()


@pytest.mark.parametrize("point", KILLS)
def test_a_kill_at_any_write_point_then_resume_gives_the_solo_output(point, kill_input, tmp_path):
    source, options, solo, solo_page = kill_input
    out, page = tmp_path / "out.jsonl", tmp_path / "page.html"
    killed = subprocess.run([sys.executable, "cli.py", "annotate", *options, "-o", str(out), "--html", str(page)],
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "TAGPIPE_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((tmp_path / ".out.jsonl.resume.json").read_text())  # every point is after a checkpoint
    assert state["finished"] == (point in FINISHED)
    assert out.exists() == ("finalize" in point) and page.exists() == (point == "annotate-finalize@2"), \
        "a target appears only when the run is complete"
    resumed = annotate(*options, "-o", out, "--html", page, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == solo and page.read_bytes() == solo_page
    assert not list(tmp_path.glob(".*")), "no partial file, sidecar or lock left behind"


# -- input detection ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_file_with_a_byte_order_mark_is_decoded(model, tmp_path, encoding):
    text = f"{SENTENCE}\n\nZürich and Köln\r\n"
    plain, wide = tmp_path / "plain.txt", tmp_path / "wide.txt"
    plain.write_text(text.replace("\r\n", "\n"), encoding="utf-8")
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # the -be codec writes no mark
    wide.write_bytes(data)
    for path in (plain, wide):
        assert annotate(path, "-m", model, "-o", path.with_suffix(".jsonl"), "-q").exit_code == 0
    assert records(wide.with_suffix(".jsonl")) == records(plain.with_suffix(".jsonl"))
    assert records(wide.with_suffix(".jsonl"))[2]["text"] == "Zürich and Köln"


def test_a_txt_is_text_even_when_its_lines_end_in_tag_like_words(model, tmp_path):
    source = tmp_path / "vitamins.txt"
    source.write_text("Take Vitamin B-12\nAvoid Vitamin B-6\n")
    out = tmp_path / "out.jsonl"
    assert annotate(source, "-m", model, "-o", out, "-q").exit_code == 0
    assert [r["text"] for r in records(out)] == ["Take Vitamin B-12", "Avoid Vitamin B-6"]
    assert annotate(source, "-m", model, "-o", out, "--format", "conll", "-q").exit_code == 0
    assert [r["tokens"] for r in records(out)] == [["Take", "Avoid"]]  # --format conll: the first column

    columns = tmp_path / "eng.testa"  # an extension no format claims: looked at, and it is CoNLL
    columns.write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\n")
    assert annotate(columns, "-m", model, "-o", out, "-q").exit_code == 0
    assert [r["tokens"] for r in records(out)] == [["EU", "rejects"]]


def test_fifos_in_a_folder_are_skipped_unopened(model, tmp_path):
    folder = tmp_path / "corpus"
    _text(folder, "a.txt", lines=2)
    os.mkfifo(folder / "pipe.txt")  # opening it would block for ever: nobody writes to it
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "cli.py", "annotate", str(folder), "-m", model, "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"warning: ignored {folder / 'pipe.txt'}: a FIFO, not a regular file (never opened)" in done.stderr
    assert [r["file"] for r in records(out)] == ["a.txt", "a.txt"] and "1 files ignored" in done.stderr


def test_a_fifo_named_as_the_input_is_read(model, tmp_path):
    pipe = tmp_path / "stream.txt"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "w") as writer:
            writer.write(f"{SENTENCE}\nParis\n")

    threading.Thread(target=feed, daemon=True).start()
    out = tmp_path / "out.jsonl"
    result = annotate(pipe, "-m", model, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in records(out)] == [SENTENCE, "Paris"]


# -- HTML hygiene ------------------------------------------------------------------------------
def test_ids_and_labels_are_escaped_in_html_pages(model, tmp_path):
    import spacy
    from spacy.tokens import Doc, DocBin

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "<script>alert(1)</script>", "text": f"<b>{SENTENCE}</b>"}) + "\n")
    page = tmp_path / "page.html"
    assert annotate(source, "-m", model, "-o", tmp_path / "out.jsonl", "--html", page, "-q").exit_code == 0
    html = page.read_text()
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;" in html

    docbin = tmp_path / "in.spacy"  # a label an earlier pipeline set, kept by --existing-ents keep
    doc = Doc(spacy.blank("en").vocab, words=["Paris", "is", "nice"], ents=["B-<img src=x onerror=alert(2)>", "O", "O"])
    DocBin(docs=[doc]).to_disk(docbin)
    assert annotate(docbin, "-m", model, "-o", tmp_path / "d.jsonl", "--html", page, "--existing-ents", "keep",
                    "-q").exit_code == 0
    html = page.read_text()
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html


# -- tagging models in every output -----------------------------------------------------------
def test_a_tagging_model_writes_tags_in_jsonl_conll_and_predict(tag_model, model, tmp_path):
    import tagpipe

    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\n\nThe European Commission met in Brussels .\n")
    jsonl, conll = tmp_path / "out.jsonl", tmp_path / "out.conll"
    assert annotate(source, "-m", tag_model, "-o", jsonl, "-q").exit_code == 0
    assert annotate(source, "-m", tag_model, "-o", conll, "-q").exit_code == 0
    got = records(jsonl)
    assert all(len(r["tags"]) == len(r["tokens"]) for r in got) and got[1]["tags"] == []
    assert got[0]["tags"][:2] == ["NNP", "NNP"] and got[0]["tags"][-1] == "."
    assert [r["tags"] for r in got] == [r["tags"] for r in tagpipe.load(tag_model).predict(
        [r["text"] for r in got])]
    columns = [line.split() for line in conll.read_text().splitlines() if line]
    assert [c[1] for c in columns] == got[0]["tags"] + got[2]["tags"] and {len(c) for c in columns} == {2}

    chained = tmp_path / "chain.conll"  # an NER model and a tagger: token TAG IOB2, as CoNLL-2003
    assert annotate(source, "-m", model, "-m", tag_model, "-o", chained, "-q").exit_code == 0
    first = chained.read_text().split("\n\n")[0].splitlines()
    assert first[:2] == ["Angela NNP B-PER", "Merkel NNP I-PER"]
    both = tmp_path / "both.jsonl"
    assert annotate(source, "-m", model, "-m", tag_model, "-o", both, "-q").exit_code == 0
    assert records(both)[0]["entities"] and records(both)[0]["tags"] == got[0]["tags"]


def test_evaluate_scores_a_tagger_on_the_column_it_learnt(tag_model, tmp_path):
    def accuracy(corpus: Path, *extra: str) -> float:
        result = CliRunner().invoke(cli, ["evaluate", str(corpus), "-m", str(tag_model), "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["accuracy"]

    learnt = accuracy(TINY_CONLL)
    assert learnt > 0.8 and learnt == accuracy(TINY_CONLL, "--tag-column", "1")
    assert accuracy(TINY_CONLL, "--tag-column", "-1") < 0.2  # the NER column holds no POS tag
    annotated = tmp_path / "tagged.conll"  # annotate's CoNLL output carries the tags in that column
    assert annotate(TINY_CONLL, "-m", tag_model, "-o", annotated, "-q").exit_code == 0
    assert accuracy(annotated) == 1.0
