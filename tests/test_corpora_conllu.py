"""CoNLL-U: fields, multiword tokens and empty nodes, exact errors, lossless round trips on UD."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagpipe.corpora.conllu import ConlluFormat, read_conllu, write_conllu
from tagpipe.corpora.text import sentence_text
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError

SAMPLE = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
# note = after the text
1	I	I	PRON	PRP	Case=Nom	4	nsubj	4:nsubj	_
2-3	don't	_	_	_	_	_	_	_	_
2	do	do	AUX	VBP	_	4	aux	4:aux	_
3	n't	not	PART	RB	_	4	advmod	4:advmod	_
4	know	know	VERB	VB	_	0	root	0:root	SpaceAfter=No
5	.	.	PUNCT	.	_	4	punct	4:punct	_

# sent_id = s2
# newpar id = p2
# text = She sleeps
1	She	she	PRON	PRP	_	2	nsubj	2:nsubj	_
1.1	sleeps	sleep	VERB	VBZ	_	_	_	0:root	CopyOf=2
2	sleeps	sleep	VERB	VBZ	_	0	root	0:root	SpaceAfter=No

"""
WORD = "1\ta\ta\tX\tX\t_\t0\troot\t_\t_"
UD_FILES = ["en_ewt-ud-dev.conllu", "en_pud-ud-test.conllu", "zh_pud-ud-test.conllu"]


def write(tmp_path, text: str | bytes, name: str = "corpus.conllu"):
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def plain(sentences):
    return [replace(s, source=None, line=None) for s in sentences]


def test_reads_every_field(tmp_path):
    path = write(tmp_path, SAMPLE)
    first, second = read_conllu(path)
    assert first.tokens == ["I", "do", "n't", "know", "."]
    assert first.tags == first.upos == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first.tags is not first.upos
    assert first.xpos == ["PRP", "VBP", "RB", "VB", "."]
    assert first.heads == [4, 4, 4, 0, 4]
    assert first.deprels == ["nsubj", "aux", "advmod", "root", "punct"]
    assert (first.id, first.text, first.doc_start, first.line, first.source) == (
        "s1",
        "I don't know.",
        True,
        1,
        str(path),
    )
    assert (second.id, second.text, second.doc_start, second.line) == ("s2", "She sleeps", False, 12)
    assert first.extra["lemmas"] == ["I", "do", "not", "know", "."]
    assert first.extra["multiword"] == ["2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_"]
    assert first.extra["comments"] == ["newdoc id = d1"]
    assert first.extra["comments_after_text"] == ["note = after the text"]
    assert second.extra["empty_nodes"][0].startswith("1.1\tsleeps")
    assert second.tokens == ["She", "sleeps"]


def test_multiword_tokens_keep_spaces_consistent_with_text(tmp_path):
    first, second = read_conllu(write(tmp_path, SAMPLE))
    # "do" + "n't" are one surface token: no space between them, the MWT line decides the one after
    assert first.spaces == [True, False, True, False, True]
    assert sentence_text(replace(first, text=None)) == first.text
    assert second.spaces == [True, False]


@pytest.mark.parametrize(
    ("column", "expected"),
    [("xpos", ["PRP", "VBP", "RB", "VB", "."]), ("deprel", ["nsubj", "aux", "advmod", "root", "punct"])],
)
def test_tag_column(tmp_path, column, expected):
    assert next(read_conllu(write(tmp_path, SAMPLE), tag_column=column)).tags == expected


def test_no_tags_and_unknown_tag_column(tmp_path):
    path = write(tmp_path, SAMPLE)
    assert next(read_conllu(path, tag_column=None)).tags is None
    with pytest.raises(ValueError, match=r"^unknown CoNLL-U tag column 'ner'; expected one of form, lemma"):
        read_conllu(path, tag_column="ner")


def test_write_reproduces_the_file(tmp_path):
    path = write(tmp_path, SAMPLE)
    out = io.StringIO()
    write_conllu(read_conllu(path), out)
    assert out.getvalue() == SAMPLE
    again = write(tmp_path, out.getvalue(), "again.conllu")
    assert plain(read_conllu(again)) == plain(read_conllu(path))


def test_write_fills_missing_columns_and_puts_tags_where_asked(tmp_path):
    sentence = Sentence(tokens=["Hi", "!"], tags=["INTJ", "PUNCT"], spaces=[False, True], doc_start=True)
    out = io.StringIO()
    write_conllu([sentence], out, tag_column="upos")
    assert out.getvalue() == (
        "# newdoc\n1\tHi\t_\tINTJ\t_\t_\t_\t_\t_\tSpaceAfter=No\n2\t!\t_\tPUNCT\t_\t_\t_\t_\t_\t_\n\n"
    )
    [back] = read_conllu(write(tmp_path, out.getvalue()))
    assert (back.tokens, back.upos, back.heads, back.spaces, back.doc_start) == (
        ["Hi", "!"],
        ["INTJ", "PUNCT"],
        None,
        [False, True],
        True,
    )


def test_write_updates_space_after_when_spaces_change(tmp_path):
    [sentence] = read_conllu(write(tmp_path, WORD + "\n2\tb\tb\tX\tX\t_\t1\tdep\t_\tGloss=b\n"))
    sentence.spaces = [False, False]
    out = io.StringIO()
    write_conllu([sentence], out)
    assert out.getvalue().splitlines()[0].endswith("\tSpaceAfter=No")
    assert out.getvalue().splitlines()[1].endswith("\tGloss=b|SpaceAfter=No")


@pytest.mark.parametrize(
    ("sentence", "message"),
    [
        (Sentence(["a\tb"]), r"^sentence #1: token 1 has a field 'a\\tb' that is empty or holds a tab"),
        (Sentence(["a"], upos=["X", "Y"], id="s3"), r"^sentence 's3': upos has 2 items for 1 tokens$"),
        (
            Sentence(["a"], text="two\nlines"),
            r"^sentence #1: comment '# text = two\\nlines' contains a line break$",
        ),
    ],
)
def test_write_refuses_what_cannot_be_read_back(sentence, message):
    with pytest.raises(ValueError, match=message):
        write_conllu([sentence], io.StringIO())


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ([WORD, "2\tb\tb"], 2, "expected 10 tab-separated fields, found 3"),
        ([WORD, "3\tb\tb\tX\tX\t_\t1\tdep\t_\t_"], 2, "expected word ID 2, found '3'"),
        (
            [WORD, "2\tb\tb\tX\tX\t_\tx\tdep\t_\t_"],
            2,
            "HEAD must be a word number (0 for the root), found 'x'",
        ),
        ([WORD, "2\tb\tb\tX\tX\t_\t7\tdep\t_\t_"], 2, "HEAD 7 is past the sentence's last word (2)"),
        (
            [WORD, "2\tb\tb\tX\tX\t_\t_\tdep\t_\t_"],
            2,
            "HEAD must be a word number (0 for the root), found '_'",
        ),
        ([WORD, "# late comment"], 2, "comment line after the words of a sentence"),
        (["# sent_id = 1", "# text = nothing"], 1, "sentence has no word lines"),
        ([WORD, "2\t\tb\tX\tX\t_\t1\tdep\t_\t_"], 2, "the FORM field is empty"),
        (["2-3\tab\t_\t_\t_\t_\t_\t_\t_\t_", WORD], 1, "multiword token '2-3' must span words 1-N"),
        ([WORD, "2-x\tab\t_\t_\t_\t_\t_\t_\t_\t_"], 2, "invalid ID '2-x'"),
        ([WORD, "3.1\tab\t_\t_\t_\t_\t_\t_\t_\t_"], 2, "empty node '3.1' must follow word 1"),
        (
            [WORD, "2-3\tab\t_\t_\t_\t_\t_\t_\t_\t_"],
            1,
            "a multiword token ends at word 3, after the last word",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path, f"{WORD}\n\n" + "\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as caught:
        list(read_conllu(path))
    assert str(caught.value) == f"{path}:{line + 2}: {message}"


def test_on_error_skips_the_bad_sentence(tmp_path):
    text = f"{WORD}\n\n1\tb\n\n".encode() + b"1\t\xff\n\n" + f"{WORD}\n".encode()
    path = write(tmp_path, text)
    errors: list[CorpusError] = []
    assert len(list(read_conllu(path, on_error=errors.append))) == 2
    assert [str(e) for e in errors] == [
        f"{path}:3: expected 10 tab-separated fields, found 2",
        f"{path}:5: invalid UTF-8 at byte 3 of the line",
    ]


def test_format_class(tmp_path):
    from tagpipe.host import get_registry

    fmt = get_registry().get("format", "conllu")()
    assert isinstance(fmt, ConlluFormat) and fmt.extensions == (".conllu",)
    path = write(tmp_path, SAMPLE)
    assert [s.tags for s in fmt.read(path, tag_column="xpos", scheme="ignored")][1] == ["PRP", "VBZ"]
    fmt.write(fmt.read(path), tmp_path / "out.conllu")
    assert (tmp_path / "out.conllu").read_text(encoding="utf-8") == SAMPLE


CONLLU_PARTS = [
    WORD,
    "2\tb\tb\tX\tX\t_\t1\tdep\t_\t_",
    "1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_",
    "1.1",
    "#",
    "# text = x",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.sampled_from([*CONLLU_PARTS, "", "\t", "x"]), max_size=10).map(
            lambda lines: "\n".join(lines).encode()
        ),
    )
)
def test_fuzz_only_corpus_errors_and_none_with_on_error(tmp_path, data):
    path = write(tmp_path, data)
    try:
        list(read_conllu(path))
    except CorpusError:
        pass
    for sentence in read_conllu(path, on_error=lambda error: None):
        assert len(sentence.spaces) == len(sentence.tokens) > 0


@pytest.mark.parametrize(
    ("name", "sentences", "words"),
    [
        ("en_ewt-ud-dev.conllu", 2001, 25147),
        ("en_pud-ud-test.conllu", 1000, 21180),
        ("zh_pud-ud-test.conllu", 1000, 21415),
    ],
)
def test_ud_counts_and_text_agree_with_tokens(name, sentences, words):
    corpus = list(read_conllu(shared_path("ud", name)))
    assert (len(corpus), sum(map(len, corpus))) == (sentences, words)
    for s in corpus:
        assert sentence_text(replace(s, text=None)) == s.text, s.id
        assert all(0 <= h <= len(s) for h in s.heads)


@pytest.mark.parametrize("name", UD_FILES)
def test_ud_files_round_trip_byte_for_byte(tmp_path, name):
    path = shared_path("ud", name)
    written = tmp_path / name
    write_conllu(read_conllu(path), written)
    assert written.read_bytes() == path.read_bytes()
    assert plain(read_conllu(written)) == plain(read_conllu(path))
