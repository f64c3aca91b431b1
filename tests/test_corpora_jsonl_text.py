"""JSON lines and plain text readers/writers, the shared I/O helpers and the builtin formats."""

from __future__ import annotations

import gzip
import io
import json
import sys
from dataclasses import replace

import pytest
from conftest import REPO, shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagpipe.corpora.conllu import read_conllu
from tagpipe.corpora.io import atomic_write, open_lines
from tagpipe.corpora.jsonl import JsonlFormat, read_jsonl, write_jsonl
from tagpipe.corpora.text import TextFormat, read_text, sentence_text, write_text
from tagpipe.corpora.types import Sentence
from tagpipe.data import detect_format
from tagpipe.errors import CorpusError, TagpipeError


def write(tmp_path, text: str | bytes, name: str = "corpus.jsonl"):
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def plain(sentences):
    return [replace(s, source=None, line=None) for s in sentences]


# -- JSON lines ---------------------------------------------------------------------------------


def test_jsonl_records_fields_and_extra(tmp_path):
    path = write(
        tmp_path,
        '{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"], "id": 7, "lang": "en"}\n'
        "\n"
        '  {"text": "Not yet tokenised.", "meta": {"a": 1}}\n',
    )
    first, second = read_jsonl(path)
    assert (first.tokens, first.tags, first.id, first.extra, first.line) == (
        ["Ann", "ran"],
        ["B-PER", "O"],
        "7",
        {"lang": "en"},
        1,
    )
    assert (second.tokens, second.text, second.tags, second.extra, second.line) == (
        [],
        "Not yet tokenised.",
        None,
        {"meta": {"a": 1}},
        3,
    )
    assert second.source == str(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"id": "x"}', "record has neither 'text' nor 'tokens'"),
        ('{"tokens": ["a", "b"], "tags": ["O"]}', "'tags' has 1 items but 'tokens' has 2"),
        ('{"tokens": ["a"], "tags": [1]}', "'tags' must be a list of str values"),
        ('{"text": "a b", "tags": ["O", "O"]}', "'tags' given without 'tokens'"),
        ('{"tokens": "a b"}', "'tokens' must be a list of strings"),
        ('{"text": 3}', "'text' must be a string, not int"),
        ('{"tokens": ["a"], "heads": [true]}', "'heads' must be a list of int values"),
        ('{"tokens": ["a"], "id": [1]}', "'id' must be a string or an integer, not list"),
        ("[" * 100_000, "JSON nested too deeply"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, '{"tokens": ["ok"]}\n' + line + "\n")
    with pytest.raises(CorpusError) as caught:
        list(read_jsonl(path))
    assert str(caught.value) == f"{path}:2: {message}"


def test_jsonl_on_error_continues(tmp_path):
    path = write(tmp_path, b'{"tokens": ["a"]}\nnope\n{"id": 1}\n\xff\n{"text": "b"}\n')
    errors: list[CorpusError] = []
    assert [s.line for s in read_jsonl(path, on_error=errors.append)] == [1, 5]
    assert [e.line for e in errors] == [2, 3, 4]


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    conllu = shared_path("ud", "en_ewt-ud-dev.conllu")
    sentences = list(read_conllu(conllu))[:50]
    path = tmp_path / "ewt.jsonl"
    write_jsonl(sentences, path)
    assert plain(read_jsonl(path)) == plain(sentences)
    texts = [Sentence(tokens=[], text="raw only"), Sentence(tokens=[], text="", tags=[])]
    write_jsonl(texts, path)
    assert plain(read_jsonl(path)) == texts
    assert path.read_text().splitlines()[0] == '{"text": "raw only"}'


def test_jsonl_write_refuses_extra_keys_that_shadow_fields():
    with pytest.raises(ValueError, match=r"^sentence None: extra keys \['tags'\] would shadow"):
        write_jsonl([Sentence(["a"], extra={"tags": ["O"]})], io.StringIO())


def test_json_array_file_with_line_numbers(tmp_path):
    path = write(tmp_path, '[\n  {"text": "a b", "triples": []},\n\n  {"tokens": ["c"]}\n]\n', "data.json")
    first, second = read_jsonl(path)
    assert (first.text, first.extra, first.line) == ("a b", {"triples": []}, 2)
    assert (second.tokens, second.line) == (["c"], 4)
    bad = write(tmp_path, '[\n  {"text": "a"},\n  {"id": 1}\n  {"text": "b"}\n]', "bad.json")
    errors: list[CorpusError] = []
    assert [s.text for s in read_jsonl(bad, on_error=errors.append)] == ["a"]
    assert [str(e) for e in errors] == [
        f"{bad}:3: record has neither 'text' nor 'tokens'",
        f"{bad}:4: expected ',' or ']' after a record of the JSON array",
    ]


@pytest.mark.parametrize(("split", "count"), [("train", 5019), ("val", 500), ("test", 703)])
def test_webnlg_json_arrays(split, count):
    corpus = list(read_jsonl(shared_path("webnlg", f"{split}.json")))
    assert len(corpus) == count and all(s.text and "triple_list" in s.extra for s in corpus)


# -- plain text ---------------------------------------------------------------------------------


def test_text_one_document_per_line(tmp_path):
    path = write(tmp_path, "\ufeffFirst line.\r\n\nThird line.", "docs.txt")
    sentences = list(read_text(path))
    assert [(s.text, s.id, s.line, s.tokens) for s in sentences] == [
        ("First line.", "1", 1, []),
        ("", "2", 2, []),
        ("Third line.", "3", 3, []),
    ]


def test_text_bad_utf8_is_an_error_or_skipped_keeping_numbering(tmp_path):
    path = write(tmp_path, b"ok\ncaf\xe9\nfine\n", "docs.txt")
    with pytest.raises(CorpusError) as caught:
        list(read_text(path))
    assert str(caught.value) == f"{path}:2: invalid UTF-8 at byte 4 of the line"
    errors: list[CorpusError] = []
    assert [(s.id, s.text) for s in read_text(path, on_error=errors.append)] == [("1", "ok"), ("3", "fine")]
    assert [e.line for e in errors] == [2]


def test_text_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a b\n\xff\n")))
    errors: list[CorpusError] = []
    assert [s.text for s in read_text("-", on_error=errors.append)] == ["a b"]
    assert str(errors[0]) == "<stdin>:2: invalid UTF-8 at byte 1 of the line"


def test_text_write_and_sentence_text(tmp_path):
    sentences = [
        Sentence(tokens=[], text="As is."),
        Sentence(tokens=["New", "York", "."], spaces=[True, False, True]),
        Sentence(tokens=["a", "b"]),
    ]
    assert [sentence_text(s) for s in sentences] == ["As is.", "New York.", "a b"]
    path = tmp_path / "out.txt"
    write_text(sentences, path)
    assert path.read_text() == "As is.\nNew York.\na b\n"
    with pytest.raises(ValueError, match=r"^sentence #1: the text holds a newline"):
        write_text([Sentence(tokens=[], text="two\nlines")], io.StringIO())


def test_sample_news_text():
    sentences = list(read_text(REPO / "corpora" / "samples" / "news.txt"))
    assert len(sentences) == 31 and [s.id for s in sentences if not s.text] == ["16"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(
            st.sampled_from(
                ['{"tokens": ["a"]}', '{"text": "b"}', "[", "]", "{", ",", '"x"', "null", "", " "]
            ),
            max_size=8,
        ).map(lambda lines: "\n".join(lines).encode()),
    )
)
def test_fuzz_jsonl_and_text_only_corpus_errors(tmp_path, data):
    path = write(tmp_path, data)
    for reader in (read_jsonl, read_text):
        try:
            list(reader(path))
        except CorpusError:
            pass
        list(reader(path, on_error=lambda error: None))


# -- shared helpers and the builtin formats -----------------------------------------------------


def test_open_lines_gzip_and_missing_files(tmp_path):
    path = tmp_path / "a.txt.gz"
    path.write_bytes(gzip.compress(b"one\r\ntwo"))
    assert list(open_lines(path)) == [(1, "one"), (2, "two")]
    with pytest.raises(TagpipeError, match=r"missing\.txt: cannot read: No such file or directory$"):
        list(open_lines(tmp_path / "missing.txt"))
    (tmp_path / "fake.gz").write_bytes(b"not gzip")
    with pytest.raises(TagpipeError, match=r"fake\.gz: cannot read: Not a gzipped file"):
        list(open_lines(tmp_path / "fake.gz"))


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o640)
    with pytest.raises(RuntimeError), atomic_write(path) as out:
        out.write("partial")
        raise RuntimeError
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_write(path) as out:
        out.write("new\n")
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o640
    with atomic_write(tmp_path / "z.jsonl.gz") as out:
        write_jsonl([Sentence(["a"])], out)
    assert [s.tokens for s in read_jsonl(tmp_path / "z.jsonl.gz")] == [["a"]]


def test_dash_writes_to_stdout(capsys):
    write_text([Sentence(tokens=[], text="to stdout")], "-")
    with atomic_write("-") as out:
        out.write("also\n")
    assert capsys.readouterr().out == "to stdout\nalso\n"


def test_bad_options_are_value_errors_the_cli_can_show():
    from tagpipe.corpora.conll import read_conll
    from tagpipe.corpora.io import CorpusOptionError

    with pytest.raises(CorpusOptionError) as caught:
        read_conll("x.conll", scheme="bilou")
    assert isinstance(caught.value, TagpipeError) and isinstance(caught.value, ValueError)
    assert str(caught.value) == "unknown tagging scheme 'bilou'; expected one of iob1, iob2, bioes, bmes"
    with pytest.raises(
        CorpusOptionError, match="^unknown CoNLL-U tag column -1; expected one of form, lemma"
    ):
        read_conllu("x.conllu", tag_column=-1)


def test_detect_format(tmp_path):
    conll = write(tmp_path, "-DOCSTART- O\n\nEU B-ORG\nrejects O\n", "ner.txt")
    text = write(tmp_path, "Angela Merkel met Emmanuel Macron.\nHello O\n", "docs.txt")
    assert [detect_format(p) for p in ("x.conllu", "x.conll.gz", "x.bio", "x.JSONL", "x.json")] == [
        "conllu",
        "conll",
        "conll",
        "jsonl",
        "jsonl",
    ]
    assert (detect_format(conll), detect_format(text)) == ("text", "text")  # .txt is text (--format conll: columns)
    assert detect_format(write(tmp_path, "EU B-ORG\nrejects O\n", "eng.testa")) == "conll"  # unclaimed: sniffed
    with pytest.raises(
        TagpipeError, match=r"^cannot tell the format of 'x\.csv' from its extension '\.csv'; name one"
    ):
        detect_format("x.csv")


def test_builtin_formats_are_registered_by_the_builtin_plugin():
    from tagpipe.host import get_registry

    registry = get_registry()
    assert registry.names("format") == ["conll", "conllu", "jsonl", "text", "webnlg"]
    builtin = ["conll", "conllu", "jsonl", "text"]
    assert {registry.entry("format", n).plugin for n in builtin} == {"builtin_formats"}
    assert registry.entry("format", "webnlg").plugin == "triples"
    assert isinstance(registry.get("format", "jsonl")(), JsonlFormat)
    assert isinstance(registry.get("format", "text")(), TextFormat)


def test_format_objects_read_and_write(tmp_path):
    sentences = [Sentence(["a"], ["O"], id="1")]
    fmt = JsonlFormat()
    fmt.write(sentences, tmp_path / "a.jsonl", scheme="ignored")
    assert json.loads((tmp_path / "a.jsonl").read_text()) == {"id": "1", "tokens": ["a"], "tags": ["O"]}
    assert plain(fmt.read(tmp_path / "a.jsonl", tag_column=3)) == sentences
    TextFormat().write(sentences, tmp_path / "a.txt")
    assert [s.text for s in TextFormat().read(tmp_path / "a.txt")] == ["a"]
