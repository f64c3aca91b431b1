"""CoNLL column files: reading, schemes, errors with file and line, writing, real corpora."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
from conftest import REPO, data_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagpipe.corpora.conll import ConllFormat, read_conll, write_conll
from tagpipe.corpora.schemes import is_valid
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def write(tmp_path, text: str | bytes, name: str = "corpus.conll"):
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def plain(sentences):
    """Sentences without where they came from, to compare two reads."""
    return [replace(s, source=None, line=None) for s in sentences]


def test_reads_columns_documents_and_positions(tmp_path):
    path = write(tmp_path, CONLL2003)
    first, second, third = read_conll(path)
    assert first.tokens == ["EU", "rejects", "German"]
    assert first.tags == ["B-ORG", "O", "B-MISC"]
    assert first.extra["columns"] == [["NNP", "VBZ", "JJ"], ["B-NP", "B-VP", "B-NP"]]
    assert (first.doc_start, second.doc_start, third.doc_start) == (True, False, True)
    assert (first.line, second.line, third.line) == (3, 7, 12)
    assert first.source == str(path)


def test_tabs_runs_of_spaces_crlf_and_no_final_newline(tmp_path):
    path = write(tmp_path, "Peter\tB-PER\r\nBlackburn   I-PER \r\n\r\n\r\nsaid\t O")
    sentences = list(read_conll(path))
    assert [s.tokens for s in sentences] == [["Peter", "Blackburn"], ["said"]]
    assert [s.tags for s in sentences] == [["B-PER", "I-PER"], ["O"]]


def test_other_tag_columns_and_no_tags(tmp_path):
    path = write(tmp_path, CONLL2003)
    chunks = next(read_conll(path, tag_column=2))
    assert chunks.tags == ["B-NP", "B-VP", "B-NP"]
    assert chunks.extra["columns"] == [["NNP", "VBZ", "JJ"], ["B-ORG", "O", "B-MISC"]]
    untagged = next(read_conll(path, tag_column=None))
    assert untagged.tags is None and len(untagged.extra["columns"]) == 3


def test_target_scheme_converts_on_read(tmp_path):
    path = write(tmp_path, "Ann I-PER\nLee I-PER\nBo B-PER\nin O\nRome I-LOC\n")

    def tags(**options):
        return next(read_conll(path, scheme="iob1", **options)).tags

    assert tags(target_scheme="iob2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert tags(target_scheme="bioes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert tags() == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]


def test_msra_style_characters_with_bmes(tmp_path):
    path = write(tmp_path, "中 B-ORG\n国 M-ORG\n队 E-ORG\n在 O\n京 S-LOC\n\n好 O\n")
    first, second = read_conll(path, scheme="bmes")
    assert first.tokens == ["中", "国", "队", "在", "京"] and "columns" not in first.extra
    assert first.tags == ["B-ORG", "M-ORG", "E-ORG", "O", "S-LOC"]
    assert next(read_conll(path, scheme="bmes", target_scheme="iob2")).tags == [
        "B-ORG",
        "I-ORG",
        "I-ORG",
        "O",
        "B-LOC",
    ]
    assert second.tokens == ["好"]


def test_column_count_mismatch_names_file_and_line(tmp_path):
    path = write(tmp_path, "a NN O\n\nEU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(CorpusError) as caught:
        list(read_conll(path))
    assert str(caught.value) == f"{path}:4: 3 columns, but the sentence's first line (3) has 4"
    assert (caught.value.path, caught.value.line) == (str(path), 4)


@pytest.mark.parametrize(
    ("tag", "scheme", "message"),
    [
        ("X-PER", "iob2", "tag 'X-PER' is not valid in IOB2 (expected O, B-TYPE, I-TYPE)"),
        ("E-PER", "iob2", "tag 'E-PER' is not valid in IOB2 (expected O, B-TYPE, I-TYPE)"),
        ("B-", "bioes", "tag 'B-' is not valid in BIOES (expected O, B-TYPE, I-TYPE, E-TYPE, S-TYPE)"),
        ("I-ORG", "bmes", "tag 'I-ORG' is not valid in BMES (expected O, B-TYPE, M-TYPE, E-TYPE, S-TYPE)"),
        ("PER", "iob1", "tag 'PER' is not valid in IOB1 (expected O, B-TYPE, I-TYPE)"),
    ],
)
def test_invalid_tags_name_file_and_line(tmp_path, tag, scheme, message):
    path = write(tmp_path, f"a O\n\nb O\nc {tag}\n")
    with pytest.raises(CorpusError) as caught:
        list(read_conll(path, scheme=scheme))
    assert str(caught.value) == f"{path}:4: {message}"


def test_tag_column_errors(tmp_path):
    path = write(tmp_path, "just\ntokens\n")
    with pytest.raises(CorpusError) as caught:
        list(read_conll(path))
    assert str(caught.value) == (
        f"{path}:1: tag column -1 is the token column (1 column(s) per line); "
        "pass tag_column=None to read tokens only"
    )
    assert next(read_conll(path, tag_column=None)).tokens == ["just", "tokens"]
    with pytest.raises(CorpusError, match=r":1: no tag column 5: the lines have 1 columns$"):
        list(read_conll(path, tag_column=5))
    with pytest.raises(ValueError, match=r"^tag_column must be a column number or None, not 'ner'$"):
        read_conll(path, tag_column="ner")
    with pytest.raises(ValueError, match="unknown tagging scheme 'bilou'"):
        read_conll(path, scheme="bilou")


def test_on_error_reports_and_skips_only_the_bad_sentence(tmp_path):
    path = write(tmp_path, b"a O\n\nb B-PER\nc NN O\nd O\n\ne O\n\n\xff O\nf O\n\ng Q\n\nh O\n")
    errors: list[CorpusError] = []
    sentences = list(read_conll(path, on_error=errors.append))
    assert [s.tokens for s in sentences] == [["a"], ["e"], ["h"]]
    assert [str(e) for e in errors] == [
        f"{path}:4: 3 columns, but the sentence's first line (3) has 2",
        f"{path}:9: invalid UTF-8 at byte 1 of the line",
        f"{path}:12: tag 'Q' is not valid in IOB2 (expected O, B-TYPE, I-TYPE)",
    ]
    with pytest.raises(CorpusError, match=r":4: 3 columns"):
        list(read_conll(path))


def test_reading_streams(tmp_path):
    path = write(tmp_path, "a O\n\nb Q\n")
    reader = read_conll(path)
    assert next(reader).tokens == ["a"]  # the bad sentence is only met when asked for
    with pytest.raises(CorpusError):
        next(reader)


def test_write_reproduces_the_file(tmp_path):
    path = write(tmp_path, CONLL2003)
    out = io.StringIO()
    write_conll(read_conll(path), out)
    assert out.getvalue() == CONLL2003 + "\n"
    written = tmp_path / "again.conll"
    write_conll(read_conll(path), written)
    assert plain(read_conll(written)) == plain(read_conll(path))


def test_write_converts_schemes_and_selects_columns(tmp_path):
    sentence = Sentence(
        tokens=["Ann", "Lee", "in", "Rome"], tags=["B-PER", "I-PER", "O", "B-LOC"], upos=list("PPAP")
    )
    out = io.StringIO()
    write_conll([sentence], out, scheme="bioes", source_scheme="iob2", columns=("tokens", "upos", "tags"))
    assert out.getvalue() == "Ann P B-PER\nLee P E-PER\nin A O\nRome P S-LOC\n\n"
    out = io.StringIO()
    write_conll([replace(sentence, doc_start=True)], out, delimiter="\t")
    assert out.getvalue().splitlines()[:3] == ["-DOCSTART-\tO", "", "Ann\tB-PER"]


@pytest.mark.parametrize(
    ("sentence", "options", "message"),
    [
        (
            Sentence(["New York"], ["O"]),
            {},
            r"^sentence #1: 'New York' cannot be a CoNLL field \(empty, or holds whitespace\)$",
        ),
        (Sentence([""], ["O"]), {}, r"cannot be a CoNLL field"),
        (Sentence(["a"]), {}, r"^sentence #1 has no tags to write$"),
        (Sentence(["a"], ["E-X"], id="s9"), {}, r"^sentence 's9': tag 'E-X' is not valid in IOB2"),
        (Sentence(["a", "b"], ["O"]), {}, r"^sentence #1: a column has 1 values for 2 tokens$"),
        (Sentence(["-DOCSTART-"], ["O"]), {}, r"would be read back as a document boundary"),
        (
            Sentence(["a"], ["O"]),
            {"columns": ("tokens", "ner")},
            r"^unknown CoNLL column name\(s\) \['ner'\]",
        ),
    ],
)
def test_write_refuses_what_cannot_be_read_back(sentence, options, message):
    with pytest.raises(ValueError, match=message):
        write_conll([sentence], io.StringIO(), **options)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = write(tmp_path, "old O\n")

    def sentences():
        yield Sentence(["new"], ["O"])
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_conll(sentences(), path)
    assert path.read_text() == "old O\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.conll"]


def test_format_class_and_registry(tmp_path):
    from tagpipe.host import get_registry

    fmt = get_registry().get("format", "conll")()
    assert isinstance(fmt, ConllFormat) and fmt.name == "conll" and ".txt" in fmt.extensions
    path = write(tmp_path, "Ann I-PER\n")
    [sentence] = fmt.read(path, scheme="iob1", target_scheme="iob2", unrelated_option=1)
    assert sentence.tags == ["B-PER"]
    fmt.write([sentence], tmp_path / "out.bio", scheme="bioes", source_scheme="iob2")
    assert (tmp_path / "out.bio").read_text() == "Ann S-PER\n\n"


def test_tiny_sample_corpus():
    sentences = list(read_conll(REPO / "corpora" / "samples" / "tiny.conll"))
    assert len(sentences) == 40 and sum(s.doc_start for s in sentences) == 4
    assert all(is_valid(s.tags, "iob2") and len(s.extra["columns"]) == 2 for s in sentences)
    assert {t[2:] for s in sentences for t in s.tags if t != "O"} == {"PER", "LOC", "ORG", "MISC"}


LINE_PARTS = [
    "O",
    "B-PER",
    "I-PER",
    "E-LOC",
    "S-X",
    "M-Y",
    "-DOCSTART-",
    "word",
    "B-",
    "x-y",
    " ",
    "\t",
    "\r",
    "\xa0",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.lists(st.sampled_from(LINE_PARTS), max_size=5).map("".join), max_size=12).map(
            lambda lines: "\n".join(lines).encode()
        ),
    ),
    st.sampled_from(["iob1", "iob2", "bioes", "bmes"]),
)
def test_fuzz_only_corpus_errors_and_none_with_on_error(tmp_path, data, scheme):
    path = write(tmp_path, data)
    try:
        list(read_conll(path, scheme=scheme, target_scheme="bioes"))
    except CorpusError:
        pass
    errors: list[CorpusError] = []
    for sentence in read_conll(path, scheme=scheme, on_error=errors.append):
        assert len(sentence.tags) == len(sentence.tokens) > 0


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "sentences", "tokens", "documents"),
    [("train", 14041, 203621, 946), ("valid", 3250, 51362, 216), ("test", 3453, 46435, 231)],
)
def test_conll2003_counts(split, sentences, tokens, documents):
    path = data_path("conll2003", f"{split}.txt")
    start = time.perf_counter()
    corpus = list(read_conll(path))
    elapsed = time.perf_counter() - start
    assert (len(corpus), sum(map(len, corpus)), sum(s.doc_start for s in corpus)) == (
        sentences,
        tokens,
        documents,
    )
    assert elapsed < 5, f"reading {path} took {elapsed:.1f} s"  # ~0.3 s here; catches a quadratic slip


@pytest.mark.data
def test_conll2003_round_trips_byte_for_byte():
    path = data_path("conll2003", "valid.txt")
    out = io.StringIO()
    write_conll(read_conll(path), out)
    assert out.getvalue() == path.read_text(encoding="utf-8")


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "segments", "characters"), [("train", 50658, 2169879), ("test", 4631, 172601)]
)
def test_msra_counts(split, segments, characters):
    corpus = list(read_conll(data_path("msra", f"{split}.txt"), scheme="bmes"))
    assert (len(corpus), sum(map(len, corpus))) == (segments, characters)
