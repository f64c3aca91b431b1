"""``tagpipe annotate`` at corpus scale: formats in and out, chaining, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."


def annotate(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, ["annotate", *args], input=input)


def records(path: Path) -> list[dict]:
    # split on "\n" only: a record's text may hold U+2028 or U+0085, which splitlines() splits on
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture
def model(tiny_ner_model) -> str:
    return str(tiny_ner_model)


# -- inputs --------------------------------------------------------------------------------
def test_text_lines_become_aligned_records(model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\n\nHello world\n")
    out = tmp_path / "out.jsonl"
    result = annotate(str(source), "-m", model, "-o", str(out))
    assert result.exit_code == 0, result.output
    got = records(out)
    assert [r["id"] for r in got] == [1, 2, 3]
    assert got[1] == {"id": 2, "text": "", "tokens": [], "entities": []}
    assert got[0]["entities"][0]["text"] == "Angela Merkel"
    assert "annotated 3 documents" in result.stderr and "0 bad lines skipped" in result.stderr
    assert not list(tmp_path.glob(".*")), "no partial file or sidecar left behind"


def test_jsonl_keeps_ids_and_fields_and_pre_split_tokens(model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": SENTENCE, "source": "x"}) + "\n"
                      + json.dumps({"id": 7, "tokens": ["don't", "Paris"], "meta": {"k": 1}}) + "\n")
    out = tmp_path / "out.jsonl"
    assert annotate(str(source), "-m", model, "-o", str(out), "-q").exit_code == 0
    first, second = records(out)
    assert first["id"] == "a" and first["source"] == "x" and first["entities"]
    assert second["id"] == 7 and second["tokens"] == ["don't", "Paris"] and second["meta"] == {"k": 1}


def test_conll_conllu_and_docbin_inputs_keep_their_tokens(model, tmp_path):
    import spacy
    from spacy.tokens import Doc, DocBin

    conll = tmp_path / "in.conll"
    conll.write_text("-DOCSTART- O\n\nAngela B-PER\nMerkel I-PER\ndon't O\n\nParis B-LOC\n")
    conllu = tmp_path / "in.conllu"
    conllu.write_text("# sent_id = s1\n# text = Angela Merkel\n1\tAngela\t_\t_\t_\t_\t_\t_\t_\t_\n"
                      "2\tMerkel\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No\n\n")
    docbin = tmp_path / "in.spacy"
    vocab = spacy.blank("en").vocab
    DocBin(docs=[Doc(vocab, words=["Angela", "Merkel", "don't"]), Doc(vocab, words=[])]).to_disk(docbin)
    expected = {conll: [(3, ["Angela", "Merkel", "don't"]), (7, ["Paris"])],
                conllu: [("s1", ["Angela", "Merkel"])],
                docbin: [(1, ["Angela", "Merkel", "don't"]), (2, [])]}
    for source, want in expected.items():
        out = tmp_path / f"{source.suffix[1:]}.jsonl"
        result = annotate(str(source), "-m", model, "-o", str(out), "-q")
        assert result.exit_code == 0, result.output
        assert [(r["id"], r["tokens"]) for r in records(out)] == want, source
    assert records(tmp_path / "conllu.jsonl")[0]["text"] == "Angela Merkel"


def test_a_folder_and_stdin(model, tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Paris\nBerlin\n")
    (folder / "sub" / "b.jsonl").write_text(json.dumps({"text": "Rome"}) + "\n")
    (folder / "notes.xyz").write_text("not a corpus\n")
    (folder / ".hidden.txt").write_text("skipped silently: hidden\n")
    out = tmp_path / "out.jsonl"
    result = annotate(str(folder), "-m", model, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert [(r["file"], r["id"], r["text"]) for r in records(out)] == [
        ("a.txt", 1, "Paris"), ("a.txt", 2, "Berlin"), (os.path.join("sub", "b.jsonl"), 1, "Rome")]
    assert "ignored" in result.stderr and "notes.xyz" in result.stderr and "1 files ignored" in result.stderr

    piped = annotate("-", "-m", model, "-q", input=f"{SENTENCE}\n\n")
    assert piped.exit_code == 0, piped.output
    lines = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["id"] for r in lines] == [1, 2] and lines[0]["entities"]


# -- outputs -------------------------------------------------------------------------------
def test_conll_spacy_and_html_outputs(model, tmp_path):
    import spacy
    from spacy.tokens import DocBin

    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\n\nParis  is nice\n")
    jsonl, conll, docbin = tmp_path / "o.jsonl", tmp_path / "o.conll", tmp_path / "o.spacy"
    assert annotate(str(source), "-m", model, "-o", str(jsonl), "-q").exit_code == 0
    assert annotate(str(source), "-m", model, "-o", str(conll), "--html", str(tmp_path / "one.html"),
                    "-q").exit_code == 0
    result = annotate(str(source), "-m", model, "-o", str(docbin), "--html", str(tmp_path / "pages"),
                      "--html-page-size", "2", "-q")
    assert result.exit_code == 0, result.output
    want = records(jsonl)

    blocks = conll.read_text().split("\n\n")
    assert blocks[0].splitlines()[:2] == ["Angela B-PER", "Merkel I-PER"]
    assert len([b for b in blocks if b]) == 2, "the empty document writes nothing; whitespace tokens are left out"
    assert "  " not in conll.read_text()

    docs = list(DocBin().from_disk(docbin).get_docs(spacy.blank("en").vocab))
    assert [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs] == [
        [(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in want]

    assert "Angela Merkel" in (tmp_path / "one.html").read_text()
    pages = sorted(p.name for p in (tmp_path / "pages").iterdir())
    assert pages == ["index.html", "page-0001.html", "page-0002.html"]


def test_unknown_output_extension_is_one_line(model, tmp_path):
    result = annotate(str(REPO / "corpora" / "samples" / "news.txt"), "-m", model, "-o", str(tmp_path / "x.csv"))
    assert result.exit_code == 1 and "cannot tell the output format" in result.output
    assert "Traceback" not in result.output


# -- chaining, processes --------------------------------------------------------------------
def test_two_models_and_a_spacy_pipeline_chain(model, tmp_path):
    import spacy

    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\nThe European Commission met in Brussels .\n")
    one, two, piped = tmp_path / "one.jsonl", tmp_path / "two.jsonl", tmp_path / "piped.jsonl"
    assert annotate(str(source), "-m", model, "-o", str(one), "-q").exit_code == 0
    assert annotate(str(source), "-m", model, "-m", model, "-o", str(two), "-q").exit_code == 0
    assert records(two) == records(one)  # the second merges the same spans into the first's

    saved = tmp_path / "sentencizer"
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(saved)
    result = annotate(str(source), "--pipeline", str(saved), "-m", model, "-o", str(piped), "-q")
    assert result.exit_code == 0, result.output
    assert [r["entities"] for r in records(piped)] == [r["entities"] for r in records(one)]


def test_n_process_gives_identical_output(model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{SENTENCE}\nLine {i} about Berlin\n\n" for i in range(100)))
    single, double = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    assert annotate(str(source), "-m", model, "-o", str(single), "--batch-size", "16", "-q").exit_code == 0
    result = annotate(str(source), "-m", model, "-o", str(double), "--batch-size", "16", "--n-process", "2", "-q")
    assert result.exit_code == 0, result.output
    assert double.read_bytes() == single.read_bytes()


# -- never loses work ----------------------------------------------------------------------
def test_resume_after_a_kill_equals_an_uninterrupted_run(model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"Line {i} : {SENTENCE}\n" if i % 7 else "\n" for i in range(6000)))
    base = [sys.executable, "cli.py", "annotate", str(source), "-m", model, "--batch-size", "8", "-q",
            "--checkpoint-seconds", "0"]
    whole = tmp_path / "whole.jsonl"
    subprocess.run([*base, "-o", str(whole)], cwd=REPO, check=True, capture_output=True)

    out = tmp_path / "out.jsonl"
    sidecar = tmp_path / ".out.jsonl.resume.json"
    process = subprocess.Popen([*base, "-o", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (sidecar.exists() and json.loads(sidecar.read_text() or "{}").get("docs", 0) >= 800):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the target appears only when the run is complete"
    done = json.loads(sidecar.read_text())["docs"]
    assert 0 < done < 6000

    resumed = subprocess.run([*base[:-3], "-o", str(out), "--resume"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after {done} documents" in resumed.stderr
    assert out.read_bytes() == whole.read_bytes()
    assert not sidecar.exists() and not (tmp_path / ".out.jsonl.partial").exists()


def test_resume_refuses_a_partial_output_of_other_options(model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{SENTENCE}\n")
    out = tmp_path / "out.jsonl"
    (tmp_path / ".out.jsonl.partial").write_text("")
    (tmp_path / ".out.jsonl.resume.json").write_text(json.dumps(
        {"version": 1, "fingerprint": {"inputs": ["elsewhere"]}, "docs": 0, "tokens": 0, "offsets": [0]}))
    result = annotate(str(source), "-m", model, "-o", str(out), "--resume")
    assert result.exit_code == 1 and "cannot resume" in result.output and "Traceback" not in result.output


# -- models of other tasks: relation triples, seq2seq ----------------------------------------
@pytest.mark.parametrize("task,field", [("triples", "triples"), ("seq2seq", "generated")])
def test_triples_and_seq2seq_models_keep_annotates_guarantees(request, tmp_path, task, field):
    import tagpipe
    from tests.conftest import TINY_WEBNLG

    model = str(request.getfixturevalue(f"tiny_{task}_model"))
    texts = [r["text"] for r in TINY_WEBNLG] * 4
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    whole = tmp_path / "whole.jsonl"
    result = annotate(str(source), "-m", model, "-o", str(whole), "--batch-size", "2")
    assert result.exit_code == 0, result.output
    got = records(whole)
    assert [r["n"] for r in got] == list(range(len(texts)))
    assert [r[field] for r in got] == [r[field] for r in tagpipe.load(model).predict(texts)]
    if task == "triples":
        assert got[1]["triples"] == [{"subject": "dog", "relation": "r0", "object": "home",
                                      "subject_span": [4, 7], "object_span": [12, 16]}]
    else:
        assert all(isinstance(r["generated"], str) for r in got)

    two = tmp_path / "two.jsonl"
    assert annotate(str(source), "-m", model, "-o", str(two), "--batch-size", "2", "--n-process", "2",
                    "-q").exit_code == 0
    assert two.read_bytes() == whole.read_bytes()

    # a run stopped by a bad line keeps its partial output; --resume after the fix completes it exactly
    lines = source.read_text().splitlines(keepends=True)
    source.write_text("".join(lines[:5]) + "{not json\n" + "".join(lines[6:]))
    out = tmp_path / "out.jsonl"
    stopped = annotate(str(source), "-m", model, "-o", str(out), "--batch-size", "2", "--strict",
                       "--checkpoint-seconds", "0")
    assert stopped.exit_code == 1 and not out.exists() and (tmp_path / ".out.jsonl.partial").exists()
    source.write_text("".join(lines))
    resumed = annotate(str(source), "-m", model, "-o", str(out), "--batch-size", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed after 4 documents" in resumed.stderr and out.read_bytes() == whole.read_bytes()


# -- bad input -----------------------------------------------------------------------------
def test_bad_text_lines_are_counted_and_named(model, tmp_path):
    source = tmp_path / "in.txt"
    long_line = ("Paris " * 17000)[:100_000]
    source.write_bytes(b"Paris\nbad \xff byte\n\n" + long_line.encode() + b"\nBerlin\n")
    out = tmp_path / "out.jsonl"
    result = annotate(str(source), "-m", model, "-o", str(out))
    assert result.exit_code == 0, result.output
    got = records(out)
    assert [r["id"] for r in got] == [1, 3, 4, 5]
    assert len(got[2]["text"]) == 100_000 and len(got[2]["tokens"]) > 16000
    assert f"warning: skipped {source}:2: invalid UTF-8 at byte 5 of the line" in result.stderr
    assert "annotated 4 documents" in result.stderr and "1 bad lines skipped" in result.stderr

    strict = annotate(str(source), "-m", model, "-o", str(tmp_path / "strict.jsonl"), "--strict")
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines()[-1] == f"Error: {source}:2: invalid UTF-8 at byte 5 of the line"
    assert "Traceback" not in strict.output and not (tmp_path / "strict.jsonl").exists()


def test_bad_jsonl_lines_are_counted_and_named(model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris"}\nnot json\n\n{"title": "no text"}\n{"text": "Berlin", "id": 9}\n')
    out = tmp_path / "out.jsonl"
    result = annotate(str(source), "-m", model, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in records(out)] == [1, 9]
    assert f"{source}:2: not valid JSON" in result.stderr
    assert f"{source}:4: record has neither 'text' nor 'tokens'" in result.stderr
    assert "2 bad lines skipped, 1 blank lines" in result.stderr

    strict = annotate(str(source), "-m", model, "-o", str(out), "--strict")
    assert strict.exit_code == 1 and strict.stderr.strip().splitlines()[-1].startswith(f"Error: {source}:2: ")


def test_a_document_over_the_tokenizer_limit_is_a_bad_line(model, tmp_path, monkeypatch):
    import spacy

    blank = spacy.blank

    def small(*args, **kwargs):
        nlp = blank(*args, **kwargs)
        nlp.max_length = 50
        return nlp

    monkeypatch.setattr(spacy, "blank", small)
    source = tmp_path / "in.txt"
    source.write_text("Paris\n" + "x" * 60 + "\n")
    result = annotate(str(source), "-m", model, "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 0, result.output
    assert f"{source}:2: document of 60 characters is longer than the tokenizer's limit" in result.stderr


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.one_of(st.binary(max_size=40),
                               st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                               st.builds(lambda t: json.dumps({"text": t}).encode(), st.text(max_size=30)),
                               st.builds(lambda t: json.dumps({"tokens": t}).encode(), st.lists(st.text(max_size=5)))),
                     max_size=12),
       jsonl=st.booleans())
def test_fuzzed_input_never_gives_a_traceback(model, tmp_path_factory, data, jsonl):
    folder = tmp_path_factory.mktemp("fuzz")
    source = folder / ("in.jsonl" if jsonl else "in.txt")
    source.write_bytes(b"\n".join(d.replace(b"\n", b" ") for d in data))
    out = folder / "out.jsonl"
    result = annotate(str(source), "-m", model, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    summary = result.stderr.strip().splitlines()[-1]
    written = len(records(out)) if out.exists() else 0
    assert summary.startswith(f"annotated {written} documents")
    skipped = int(summary.split("; ")[1].split(" bad lines")[0])
    blank = int(summary.split(", ")[-1].split(" blank")[0]) if "blank lines" in summary else 0
    lines = source.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # a final newline ends the last line, it does not start another
    assert written + skipped + blank == len(lines), "every line is a record, a counted bad line or a blank line"


def test_bf16_precision_finds_the_same_entities(model, tmp_path):
    """--precision bf16 runs the BiLSTM under autocast; decoding stays float32, so the spans agree.

    bf16 rounds the encoder's features, so a near tie of the tiny model (fp32 confidence 0.38 on
    one entity here) may go the other way: every entity fp32 is confident of must come out the
    same, and all but a few of the rest."""
    source = REPO / "corpora" / "samples" / "news.txt"
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.jsonl"
        result = annotate(str(source), "-m", model, "-o", str(out), "--precision", precision, "-q")
        assert result.exit_code == 0, result.output
        outputs[precision] = [{(e["start"], e["end"], e["label"]): e["score"] for e in r["entities"]}
                              for r in records(out)]
    fp32 = [(doc, span, score) for doc, spans in enumerate(outputs["fp32"]) for span, score in spans.items()]
    assert len(fp32) > 20
    assert all(span in outputs["bf16"][doc] for doc, span, score in fp32 if score >= 0.5)
    found = sum(span in outputs["bf16"][doc] for doc, span, _ in fp32)
    assert found >= 0.95 * len(fp32) and sum(map(len, outputs["bf16"])) <= len(fp32) + 0.05 * len(fp32)


def test_confidences_survive_a_spacy_docbin_and_show_in_the_html(tmp_path):
    """The embedded model (CoNLL labels PER/LOC/ORG/MISC): .spacy keeps Span._.tagpipe_score, the HTML
    page gives each entity a tooltip with its confidence and every label a colour of its own."""
    import re

    import spacy
    from spacy.tokens import DocBin

    source = REPO / "corpora" / "samples" / "news.txt"
    result = annotate(str(source), "-o", str(tmp_path / "out.spacy"), "--html", str(tmp_path / "out.html"), "-q")
    assert result.exit_code == 0, result.output
    assert annotate(str(source), "-o", str(tmp_path / "out.jsonl"), "-q").exit_code == 0
    expected = [[(e["text"], e["label"], e["score"]) for e in r["entities"]] for r in records(tmp_path / "out.jsonl")]
    docs = list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(spacy.blank("en").vocab))
    found = [[(e.text, e.label_, round(e._.tagpipe_score, 4)) for e in doc.ents] for doc in docs]
    assert found == expected and any(found)
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    marks = re.findall(r'<mark class="entity" title="([A-Z]+), confidence ([0-9.]+)" style="background: ([^;]+);', page)
    assert len(marks) == sum(len(doc) for doc in expected)
    colours = {label: colour for label, _, colour in marks}
    assert {"PER", "LOC", "ORG", "MISC"} <= set(colours)
    assert len(set(colours.values())) == len(colours) and "#ddd" not in colours.values()  # none left grey
