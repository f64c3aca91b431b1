"""Tagging schemes: lossless conversion through spans, validity, and the transition table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagpipe.corpora.schemes import (
    SCHEMES,
    allowed_transitions,
    check_scheme,
    convert,
    is_valid,
    spans_to_tags,
    tags_to_spans,
)

LABELS = ["PER", "LOC", "ORG", "GEO-NAME"]  # a label may itself hold a hyphen
ALL_TAGS = ["O"] + [f"{p}-{label}" for p in "BIESM" for label in ("PER", "LOC")]


@st.composite
def span_sets(draw) -> tuple[list[tuple[int, int, str]], int]:
    """Non-overlapping, sorted spans and a sentence length that holds them."""
    spans, position = [], 0
    pieces = st.tuples(st.integers(0, 2), st.integers(1, 4), st.sampled_from(LABELS))
    for gap, length, label in draw(st.lists(pieces, max_size=6)):
        start = position + gap
        spans.append((start, start + length, label))
        position = start + length
    return spans, position + draw(st.integers(0, 2))


@settings(max_examples=150, deadline=None)
@given(span_sets(), st.sampled_from(SCHEMES))
def test_spans_survive_encoding_in_every_scheme(case, scheme):
    spans, length = case
    tags = spans_to_tags(spans, length, scheme)
    assert len(tags) == length
    assert tags_to_spans(tags, scheme) == spans
    assert is_valid(tags, scheme)


@settings(max_examples=150, deadline=None)
@given(span_sets(), st.sampled_from(SCHEMES), st.sampled_from(SCHEMES))
def test_conversion_between_any_two_schemes_is_lossless(case, source, target):
    spans, length = case
    converted = convert(spans_to_tags(spans, length, source), source, target)
    assert converted == spans_to_tags(spans, length, target)
    assert convert(converted, target, source) == spans_to_tags(spans, length, source)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALL_TAGS), max_size=6), st.sampled_from(SCHEMES))
def test_valid_exactly_when_already_canonical(tags, scheme):
    """A well-formed sequence is the one its own spans re-encode to; anything else is not."""
    assert is_valid(tags, scheme) == (convert(tags, scheme, scheme) == tags)


@pytest.mark.parametrize(
    ("tags", "scheme", "valid"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "iob2", True),
        (["I-PER"], "iob2", False),
        (["B-PER", "I-LOC"], "iob2", False),
        (["B-PER", "E-PER"], "iob2", False),  # E- is no IOB2 prefix
        (["I-PER", "B-PER"], "iob1", True),
        (["B-PER"], "iob1", False),
        (["I-PER", "B-LOC"], "iob1", False),
        (["S-PER"], "iob1", False),
        (["B-PER", "I-PER", "E-PER", "S-LOC", "O"], "bioes", True),
        (["B-PER"], "bioes", False),
        (["B-PER", "O"], "bioes", False),
        (["S-PER", "I-PER"], "bioes", False),
        (["M-PER"], "bioes", False),
        (["B-ORG", "M-ORG", "E-ORG", "S-LOC", "O"], "bmes", True),
        (["B-ORG", "I-ORG", "E-ORG"], "bmes", False),  # I- is no BMES prefix
        ([], "iob2", True),
        (["O", "O"], "bmes", True),
    ],
)
def test_is_valid_examples(tags, scheme, valid):
    assert is_valid(tags, scheme) is valid


@pytest.mark.parametrize("scheme", SCHEMES)
def test_allowed_transitions_agree_with_is_valid_on_every_pair(scheme):
    c = allowed_transitions(ALL_TAGS, scheme)
    for i, a in enumerate(ALL_TAGS):
        assert is_valid([a], scheme) == (c.start[i] and c.end[i]), a
        for j, b in enumerate(ALL_TAGS):
            assert is_valid([a, b], scheme) == (c.start[i] and c.transitions[i][j] and c.end[j]), (a, b)


def test_encodings_of_known_spans():
    spans = [(0, 1, "PER"), (1, 2, "PER"), (3, 6, "ORG")]
    assert spans_to_tags(spans, 7, "iob1") == ["I-PER", "B-PER", "O", "I-ORG", "I-ORG", "I-ORG", "O"]
    assert spans_to_tags(spans, 7, "iob2") == ["B-PER", "B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "O"]
    assert spans_to_tags(spans, 7, "bioes") == ["S-PER", "S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "O"]
    assert spans_to_tags(spans, 7, "bmes") == ["S-PER", "S-PER", "O", "B-ORG", "M-ORG", "E-ORG", "O"]


def test_ill_formed_sequences_are_read_leniently():
    assert tags_to_spans(["O", "I-PER", "I-PER"], "iob2") == [(1, 3, "PER")]
    assert tags_to_spans(["B-PER", "I-LOC"], "iob2") == [(0, 1, "PER"), (1, 2, "LOC")]
    assert tags_to_spans(["B-PER", "I-PER"], "bioes") == [(0, 2, "PER")]  # no E-: runs to the end


def test_scheme_names_and_bad_tags_are_precise_errors():
    assert check_scheme("IOB2") == "iob2"
    with pytest.raises(
        ValueError, match=r"^unknown tagging scheme 'bilou'; expected one of iob1, iob2, bioes, bmes$"
    ):
        check_scheme("bilou")
    with pytest.raises(ValueError, match=r"^tag 'X-PER' is not of the form B-X / I-X / E-X / S-X / M-X / O$"):
        tags_to_spans(["X-PER"])
