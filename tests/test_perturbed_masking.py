"""Perturbed Masking: subword pooling, impact matrices against a straightforward oracle,
protocol, segmentation, the spaCy components and the CLI, all on a tiny random BERT."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagpipe.plugins.encoders.subwords import TokenizerError, align_words, check_fast, pool_words
from tagpipe.plugins.perturbed_masking.masking import ImpactModel, _top_rows, distance
from tagpipe.plugins.perturbed_masking.protocol import (
    OptionError,
    arc_scores,
    boundary_scores,
    parse_matrix,
    segmentation_counts,
    split_units,
)
from tests.conftest import REPO, shared_path

SENTENCES = [
    ["the", "unhappy", "cat", "sat", "on", "the", "mat", "."],
    ["a", "dog", "was", "walking", "home"],
    ["the", "green", "house", "is", "big", "!"],  # same subword length as the next: shared batches
    ["it", "ran", "to", "the", "small", "mat"],
    ["happy"],
]


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_bert_dir).eval(), AutoTokenizer.from_pretrained(tiny_bert_dir)


def pool_one(states: torch.Tensor, span: tuple[int, int], mode: str) -> torch.Tensor:
    """The oracle's pooling of one word's subwords ``[H]``."""
    part = states[span[0] : span[1]]
    return {"first": part[0], "mean": part.mean(0), "max": part.max(0).values}[mode]


def straightforward(model, tokenizer, words, layer, dist="euclidean", pooling="first") -> torch.Tensor:
    """The reference loop: for each of [CLS] + n words, one batch of n + 1 copies, whole model."""
    align = align_words(tokenizer, [words])
    ids, owner, spans, n = align.input_ids[0], align.word_index[0], align.spans(0), len(words)
    matrix = torch.zeros(n + 1, n + 1)
    for i in range(n + 1):
        base = ids.clone()
        if i:
            base[owner == i - 1] = tokenizer.mask_token_id
        batch = base.repeat(n + 1, 1)
        for j in range(1, n + 1):
            batch[j, owner == j - 1] = tokenizer.mask_token_id
        with torch.no_grad():
            states = model(input_ids=batch, output_hidden_states=True).hidden_states[layer]
        read = torch.stack([s[0] if i == 0 else pool_one(s, spans[i - 1], pooling) for s in states])
        matrix[i, 1:] = distance(read[:1], read[1:], dist)
    return matrix


def test_alignment_multi_subword_and_empty_words(tiny):
    _, tokenizer = tiny
    align = align_words(tokenizer, [["the", "unhappy", "\u200b", "walking"], ["cat"]])
    assert align.n_words == [4, 1]
    assert align.spans(0) == [(1, 2), (2, 4), (4, 5), (5, 7)]  # "\u200b" became [UNK]
    assert align.word_index[1].tolist()[:3] == [-1, 0, -1]
    assert align.attention_mask.sum(1).tolist() == [8, 3]


def test_pooling_matches_a_loop():
    torch.manual_seed(0)
    states = torch.randn(2, 7, 5)
    words = torch.tensor([[-1, 0, 0, 1, 2, 2, -1], [-1, 0, 1, 1, 1, -1, -1]])
    for mode in ("first", "mean", "max"):
        pooled = pool_words(states, words, 3, mode)  # [2, 3, 5]
        for b in range(2):
            for w in range(3):
                pos = (words[b] == w).nonzero().flatten().tolist()
                expect = pool_one(states[b], (pos[0], pos[-1] + 1), mode) if pos else torch.zeros(5)
                torch.testing.assert_close(pooled[b, w], expect)


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(TokenizerError, match="not a fast tokenizer"):
        check_fast(Slow())


@pytest.mark.parametrize(
    "layer,dist,pooling", [(1, "euclidean", "first"), (2, "euclidean", "mean"), (-1, "cosine", "max")]
)
def test_impact_matrix_equals_straightforward_loop(tiny, layer, dist, pooling):
    model, tokenizer = tiny
    impact = ImpactModel(model, tokenizer, layer=layer, distance=dist, pooling=pooling, batch_tokens=64,
                         device="cpu", chunk_sentences=3)
    ours = impact.matrices(SENTENCES)
    for words, matrix in zip(SENTENCES, ours, strict=True):
        expect = straightforward(model, tokenizer, words, impact.layer, dist, pooling)
        assert matrix.shape == (len(words) + 1, len(words) + 1)
        torch.testing.assert_close(matrix, expect, atol=1e-5, rtol=1e-5)


def test_bf16_matrices_stay_close_to_float32(tiny):
    """--precision bf16 runs the encoder under autocast; the matrices move by rounding only."""
    model, tokenizer = tiny
    exact = ImpactModel(model, tokenizer, device="cpu").matrices(SENTENCES)
    fast = ImpactModel(model, tokenizer, device="cpu", precision="bf16").matrices(SENTENCES)
    for a, b in zip(fast, exact, strict=True):
        assert a.dtype == torch.float32
        assert float((a - b).abs().max()) <= 0.05 * float(b.abs().max())
    assert next(model.parameters()).dtype == torch.float32, "the weights themselves stay float32"


def test_all_layers_in_one_pass_equal_one_layer_at_a_time(tiny):
    model, tokenizer = tiny
    impact = ImpactModel(model, tokenizer, device="cpu")
    by_layer = impact.matrices_by_layer(SENTENCES[:2], [0, 1, 2])
    for layer in (1, 2):
        single = ImpactModel(model, tokenizer, layer=layer, device="cpu").matrices(SENTENCES[:2])
        for a, b in zip(by_layer[layer], single, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_truncated_layers_give_identical_hidden_states(tiny):
    model, tokenizer = tiny
    ids = align_words(tokenizer, [SENTENCES[0]]).input_ids.repeat(3, 1)
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        h = model.embeddings(input_ids=ids)
        rows = torch.tensor([[0, 2, 5], [1, 1, 4], [0, 7, 3]])
        for layer, block in enumerate(model.encoder.layer, start=1):
            torch.testing.assert_close(_top_rows(block, h, rows), full[layer].gather(
                1, rows.unsqueeze(-1).expand(-1, -1, full[layer].shape[-1])), atol=1e-5, rtol=1e-5)
            h = block(h)
            h = h[0] if isinstance(h, tuple) else h
            torch.testing.assert_close(h, full[layer], atol=1e-6, rtol=1e-6)


def test_adjacent_impacts_are_the_matrix_off_diagonals(tiny):
    model, tokenizer = tiny
    impact = ImpactModel(model, tokenizer, device="cpu")
    for matrix, adjacent in zip(impact.matrices(SENTENCES), impact.adjacent_impacts(SENTENCES), strict=True):
        n = matrix.shape[0] - 1
        assert adjacent.shape == (2, n - 1)
        k = torch.arange(1, n)
        torch.testing.assert_close(adjacent[0], matrix[k, k + 1])
        torch.testing.assert_close(adjacent[1], matrix[k + 1, k])


def test_bad_options_are_user_errors(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(OptionError, match="layers 1..2"):
        ImpactModel(model, tokenizer, layer=3)
    with pytest.raises(OptionError, match="distance"):
        ImpactModel(model, tokenizer, distance="manhattan")
    with pytest.raises(OptionError, match="device"):
        ImpactModel(model, tokenizer, device="nonsense")
    with pytest.raises(OptionError, match="precision"):
        ImpactModel(model, tokenizer, precision="int8")
    from tagpipe.errors import ModelError

    with pytest.raises(ModelError, match="config.json"):
        ImpactModel.from_pretrained(tmp_path)


def test_cli_choices_are_the_engine_tuples():
    """The CLI offers the engine's own choices (one definition, in torch-free names modules)."""
    from tagpipe.plugins.perturbed_masking import cli as pm_cli
    from tagpipe.plugins.perturbed_masking import masking as perturbed_masking
    from tagpipe.plugins.perturbed_masking import protocol as pm_protocol

    for name in ("DISTANCES", "POOLINGS", "PRECISIONS"):
        assert getattr(pm_cli, name) is getattr(perturbed_masking, name), name
    for name in ("ALGORITHMS", "ORIENTATIONS", "ROOTS"):
        assert getattr(pm_cli, name) is getattr(pm_protocol, name), name


def test_orientation_and_root_choices():
    f = np.array([[0, 5, 1, 2], [0, 0, 9, 1], [0, 3, 0, 4], [0, 7, 2, 0]], dtype=float)
    paper = arc_scores(f, "paper", "cls")
    assert paper[2, 1] == f[1, 2] == 9  # masking word 2 moves word 1 most: 2 heads 1
    assert paper[0].tolist()[1:] == [5, 1, 2]  # root arcs from the [CLS] row
    transposed = arc_scores(f, "transposed", "matrix")
    assert transposed[1, 2] == 9
    assert transposed[0, 1] == pytest.approx((9 + 1) / 2)
    assert parse_matrix(f, "eisner", "paper", "cls", gold_root=3)[3] == 0
    f[0, 3] = 100.0  # word 3 moves [CLS] far more than any other word: it becomes the root
    assert parse_matrix(f, "cle", "paper", "cls")[3] == 0
    assert parse_matrix(f, "eisner", "transposed", "cls")[3] == 0
    assert parse_matrix(np.zeros((2, 2))) == [-1, 0]


def test_split_units_and_counts():
    chars = list("abcdef")
    scores = np.array([5.0, 0.1, 5.0, 5.0, 0.2])
    assert split_units(chars, scores) == ["ab", "cde", "f"]  # the mean, 3.06, is the default cut
    assert split_units(chars, scores, threshold=1.0) == ["ab", "cde", "f"]
    assert split_units(chars, scores, threshold=-np.inf) == ["abcdef"]
    assert split_units(chars, scores, threshold=np.inf) == chars
    assert segmentation_counts(["ab", "cde", "f"], ["ab", "cd", "ef"]) == (1, 3, 3)
    assert boundary_scores(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist() == [2.0, 3.0]


def test_segmentation_on_tiny_model_follows_its_boundary_signal(tiny):
    model, tokenizer = tiny
    impact = ImpactModel(model, tokenizer, device="cpu")
    chars = list("我们是中国人今天天气很好")
    scores = boundary_scores(impact.adjacent_impacts([chars])[0])
    words = split_units(chars, scores)
    assert "".join(words) == "".join(chars)
    cuts = set(np.cumsum([len(w) for w in words]).tolist())
    assert int(np.argmin(scores)) + 1 in cuts  # the gap of least mutual impact is always cut
    assert int(np.argmax(scores)) + 1 not in cuts
    assert split_units(chars, scores, threshold=float(scores.max()) + 1) == chars
    assert split_units(chars, scores, threshold=float(scores.min())) == ["".join(chars)]


def test_spacy_parser_sets_heads_and_sentences(tiny_bert_dir):
    import spacy

    import tagpipe.plugins.perturbed_masking.spacy_components  # noqa: F401 - registers the factories without the entry point

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("tagpipe_pm_parser", config={"pretrained": str(tiny_bert_dir), "algorithm": "cle"})
    doc = nlp("The cat sat on the mat. A dog ran home!")
    sents = list(doc.sents)
    assert [s.text for s in sents] == ["The cat sat on the mat.", "A dog ran home!"]
    for sent in sents:
        assert [t.dep_ for t in sent].count("ROOT") == 1
        assert all(t.head.i in range(sent.start, sent.end) for t in sent)
        assert {t.dep_ for t in sent} <= {"dep", "ROOT"}
    assert sum(len(list(t.children)) for t in doc) == len(doc) - 2
    assert "<svg" in spacy.displacy.render(doc, style="dep", jupyter=False)
    docs = list(nlp.pipe(["The dog sat.", "It ran."]))
    assert all(doc.has_annotation("DEP") for doc in docs)


def test_spacy_round_trip_in_a_fresh_process(tiny_bert_dir, tmp_path):
    import spacy

    import tagpipe.plugins.perturbed_masking.spacy_components  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_pm_parser", config={"pretrained": str(tiny_bert_dir), "layer": 1})
    expected = [t.head.i for t in nlp("The cat sat on the mat .")]
    nlp.to_disk(tmp_path / "pipeline")
    script = textwrap.dedent(f"""
        import importlib.metadata, json, spacy
        if not any(e.name == "tagpipe_pm_parser" for e in importlib.metadata.entry_points(group="spacy_factories")):
            import tagpipe.plugins.perturbed_masking.spacy_components  # source checkout without `pip install -e .`
        nlp = spacy.load({str(tmp_path / "pipeline")!r})
        doc = nlp("The cat sat on the mat .")
        print(json.dumps([[t.head.i for t in doc], nlp.get_pipe("tagpipe_pm_parser").cfg["layer"]]))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, 1]


def test_spacy_segmenter_retokenizes(tiny_bert_dir):
    import spacy

    import tagpipe.plugins.perturbed_masking.spacy_components  # noqa: F401

    nlp = spacy.blank("zh")
    nlp.add_pipe("tagpipe_pm_segmenter", config={"pretrained": str(tiny_bert_dir), "threshold": -1.0})
    assert [t.text for t in nlp("我们是中国人")] == ["我们是中国人"]
    nlp = spacy.blank("zh")
    nlp.add_pipe("tagpipe_pm_segmenter", config={"pretrained": str(tiny_bert_dir)})
    doc = nlp("我们是中国人。今天天气很好")
    assert doc.text == "我们是中国人。今天天气很好" and 1 < len(doc) < 13


def run_cli(*args: str):
    from tagpipe.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_parse_on_real_ud(tiny_bert_dir, tmp_path):
    corpus = shared_path("ud", "en_pud-ud-test.conllu")
    out, png = tmp_path / "pred.conllu", tmp_path / "m.png"
    result = run_cli("parse", str(corpus), "--pretrained", str(tiny_bert_dir), "--limit", "3", "--json",
                     "-o", str(out), "--plot", str(png), "--algorithm", "cle")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"uas", "uas_with_punct", "left_chain", "right_chain"} <= report.keys()
    assert report["sentences"] == 3 and report["protocol"]["root"] == "cls"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tagpipe.corpora.conllu import read_conllu

    predicted = list(read_conllu(out))
    assert len(predicted) == 3 and all(s.heads.count(0) == 1 for s in predicted)
    text = run_cli("parse", str(corpus), "--pretrained", str(tiny_bert_dir), "--limit", "2", "--gold-root")
    assert "punctuation excluded" in text.output and "gold root" in text.output


def test_cli_segment_on_real_ud(tiny_bert_dir, tmp_path):
    corpus = shared_path("ud", "zh_pud-ud-test.conllu")
    out = tmp_path / "seg.conllu"
    result = run_cli("segment", str(corpus), "--pretrained", str(tiny_bert_dir), "--limit", "2", "--json",
                     "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"precision", "recall", "f1"} <= report.keys() and 0 <= report["f1"] <= 100
    from tagpipe.corpora.conllu import read_conllu

    gold = [s.tokens for s in read_conllu(corpus)][:2]
    assert ["".join(s.tokens) for s in read_conllu(out)] == ["".join(t) for t in gold]


def test_cli_errors_are_one_line(tmp_path):
    corpus = shared_path("ud", "en_pud-ud-test.conllu")
    from tagpipe.cli import cli as tagpipe_cli

    result = CliRunner().invoke(tagpipe_cli, ["parse", str(corpus), "--pretrained", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "config.json" in result.output
