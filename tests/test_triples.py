"""Relation triples: the ZLPR loss, both decoders on oracle scores, training, saving, spaCy, WebNLG, CLI."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from tagpipe.plugins.triples.heads import (
    NEG,
    GPLinkerHead,
    PointerHead,
    Triple,
    gplinker_decode,
    pointer_decode,
    zlpr_loss,
)
from tests.conftest import shared_path

RELATIONS = ["r0", "r1", "r2"]
#: overlapping triples over 8 words: one subject in three triples, the pair (0-1, 3) in two
#: relations, and the entity 5-6 both an object and a subject
OVERLAPPING = [Triple(0, 1, 0, 3, 3), Triple(0, 1, 1, 3, 3), Triple(0, 1, 2, 5, 6), Triple(5, 6, 0, 7, 7)]
SENTENCE = "the cat sat on the mat and the dog ran home".split()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_zlpr(scores: list[float], labels: list[int]) -> float:
    neg = sum(math.exp(s) for s, y in zip(scores, labels, strict=True) if not y)
    pos = sum(math.exp(-s) for s, y in zip(scores, labels, strict=True) if y)
    return math.log(1 + neg) + math.log(1 + pos)


def test_zlpr_equals_brute_force():
    torch.manual_seed(0)
    scores = torch.randn(4, 7, dtype=torch.float64) * 3
    labels = (torch.rand(4, 7) < 0.3).long()
    labels[0] = 0  # no positive
    labels[1] = 1  # no negative
    got = zlpr_loss(scores, labels)
    want = [brute_zlpr(scores[i].tolist(), labels[i].tolist()) for i in range(4)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-9)


def test_zlpr_ignores_masked_positions():
    scores, labels = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[1, 0, 0]])
    masked = torch.cat([scores, torch.full((1, 2), NEG)], dim=1)
    assert torch.allclose(zlpr_loss(masked, torch.cat([labels, torch.zeros(1, 2, dtype=torch.long)], 1)),
                          zlpr_loss(scores, labels))


def test_pointer_decode_recovers_overlapping_triples_from_oracle_scores():
    width, big = 8, 10.0
    start, end = torch.full((width,), -big), torch.full((width,), -big)
    for t in OVERLAPPING:
        start[t.s_start], end[t.s_end] = big, big

    def objects(spans):
        out = torch.full((len(spans), width, len(RELATIONS), 2), -big)
        for n, (s0, s1) in enumerate(spans):
            for t in OVERLAPPING:
                if (t.s_start, t.s_end) == (s0, s1):
                    out[n, t.o_start, t.relation, 0] = big
                    out[n, t.o_end, t.relation, 1] = big
        return out

    assert pointer_decode(start, end, objects) == sorted(OVERLAPPING)


def test_gplinker_decode_recovers_overlapping_triples_from_oracle_scores():
    width, rels = 8, len(RELATIONS)
    entity, head, tail = torch.full((2, width, width), -5.0), torch.full((rels, width, width), -5.0), \
        torch.full((rels, width, width), -5.0)
    for t in OVERLAPPING:
        entity[0, t.s_start, t.s_end] = entity[1, t.o_start, t.o_end] = 5.0
        head[t.relation, t.s_start, t.o_start] = tail[t.relation, t.s_end, t.o_end] = 5.0
    assert gplinker_decode(entity, head, tail) == sorted(OVERLAPPING)


@pytest.mark.parametrize("head", [PointerHead(16, 3), GPLinkerHead(16, 3, size=8),
                                  GPLinkerHead(16, 3, size=8, efficient=True)], ids=["pointer", "gp", "egp"])
def test_heads_shapes_and_finite_loss(head):
    words, mask = torch.randn(2, 8, 16), torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    loss = head.loss(words, mask, [OVERLAPPING, [Triple(0, 0, 1, 2, 4)]])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert len(head.decode(words, [8, 5])) == 2


# -- the model -----------------------------------------------------------------------------------
def webnlg_slice(n: int):
    from tagpipe.corpora.webnlg import read_webnlg

    return [s for _, s in zip(range(n), read_webnlg(shared_path("webnlg", "train.json")), strict=False)]


@pytest.mark.parametrize("head", ["pointer", "gplinker"])
def test_a_few_steps_on_webnlg_reduce_the_loss(tiny_bert_dir, head):
    from tagpipe.plugins.triples.model import TripleModel
    from tagpipe.plugins.triples.training import gold_triples

    sentences = webnlg_slice(20)
    relations = sorted({t[2] for s in sentences for t in s.extra["triples"]})
    torch.manual_seed(0)
    model = TripleModel.build(tiny_bert_dir, relations, head, {"size": 16} if head == "gplinker" else {})
    features = model.featurize([s.tokens for s in sentences])
    gold = [gold_triples(s) for s in sentences]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = model.loss(features, gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.fixture(scope="module")
def saved_models(tiny_bert_dir, tmp_path_factory):
    """Untrained tiny models of each head, saved: ``{head: folder}``."""
    from tagpipe.plugins.triples.model import TripleModel

    out = {}
    for head, config in (("pointer", {}), ("gplinker", {"size": 8, "efficient": True})):
        torch.manual_seed(1)
        folder = tmp_path_factory.mktemp(f"triples-{head}")
        TripleModel.build(tiny_bert_dir, RELATIONS, head, config).save(folder)
        out[head] = folder
    return out


@pytest.mark.parametrize("head", ["pointer", "gplinker"])
def test_save_load_round_trip_gives_identical_predictions(saved_models, tmp_path, head):
    from tagpipe.model_folder import read_model_config
    from tagpipe.plugins.triples.model import TripleModel

    model = TripleModel.load(saved_models[head])
    model.save(tmp_path / "again")
    again = TripleModel.load(tmp_path / "again")
    assert read_model_config(tmp_path / "again", task="triples")["task"] == "triples"
    assert (tmp_path / "again" / "encoder" / "tokenizer.json").is_file()
    sentences = [SENTENCE, SENTENCE[:4]]
    features = model.featurize(sentences)
    words, mask = model.words(features)
    words2, _ = again.words(features)
    assert torch.equal(words, words2)
    for threshold in (0.0, -2.0):
        assert model.predict(sentences, threshold=threshold) == again.predict(sentences, threshold=threshold)


def test_load_refuses_another_task(saved_models, tmp_path):
    import shutil

    from tagpipe.errors import ModelError
    from tagpipe.plugins.triples.model import TripleModel

    shutil.copytree(saved_models["pointer"], tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "task": "ner"}))
    with pytest.raises(ModelError, match="task 'ner'"):
        TripleModel.load(tmp_path / "m")


def test_spacy_component_sets_triples_and_survives_to_disk(saved_models, tmp_path):
    import spacy

    import tagpipe.plugins.triples.spacy_component  # noqa: F401 - registers the factory without the entry point

    nlp = spacy.blank("en")
    # a low threshold makes the untrained model predict triples, so spans are really built
    nlp.add_pipe("tagpipe_triples", config={"model": str(saved_models["pointer"]), "threshold": -1e6})
    doc = nlp("the cat sat on the mat")
    triples = doc._.tagpipe_triples
    assert triples and all(s.doc is doc and o.doc is doc and r in RELATIONS for s, r, o in triples)

    def plain(d):
        return [(s.start, s.end, r, o.start, o.end) for s, r, o in d._.tagpipe_triples]

    nlp.to_disk(tmp_path / "pipe")
    loaded = spacy.load(tmp_path / "pipe")
    assert plain(loaded("the cat sat on the mat")) == plain(doc)
    component = loaded.get_pipe("tagpipe_triples")
    copy = type(component)(None, "copy", model=None, threshold=-1e6).from_bytes(component.to_bytes())
    assert plain(copy(nlp.make_doc("the cat sat on the mat"))) == plain(doc)
    clone = pickle.loads(pickle.dumps(component))  # how nlp.pipe(n_process=2) and --n-process spawn send it
    assert clone.is_loaded and clone.threshold == -1e6 and plain(clone(nlp.make_doc("the cat sat on the mat"))) == \
        plain(doc)


# -- WebNLG and the CLI -------------------------------------------------------------------------------
@pytest.mark.parametrize("split,sentences,triples", [("train", 5019, 11312), ("val", 500, 1223),
                                                     ("test", 703, 1607)])
def test_webnlg_reader_counts_on_the_real_files(split, sentences, triples):
    from tagpipe.corpora.webnlg import WebNLGStats, read_relations, read_webnlg

    stats = WebNLGStats()
    read = list(read_webnlg(shared_path("webnlg", f"{split}.json"), stats))
    assert (len(read), stats.sentences, stats.triples, stats.unlocated) == (sentences, sentences, triples, 0)
    assert len(read_relations(shared_path("webnlg", "rel2id.json"))) == 216


def test_webnlg_reader_reports_unlocated_entities(tmp_path):
    from tagpipe.corpora.webnlg import WebNLGStats, read_webnlg

    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"text": "Rome is in Italy .", "triple_list": [
        ["Rome", "country", "Italy"], ["Rome", "country", "Italy"], ["Roma", "leader", "Italy"]]}]))
    stats = WebNLGStats()
    (sentence,) = read_webnlg(path, stats)
    assert sentence.extra["triples"] == [[0, 1, "country", 3, 4]]
    assert sentence.extra["unlocated"] == [["Roma", "leader", "Italy"]]
    assert (stats.triples, stats.unlocated) == (2, 1)


def test_webnlg_format_is_registered():
    from tagpipe.host import get_registry

    assert get_registry().get("format", "webnlg")().name == "webnlg"


def test_triple_scores_are_exact_match_fractions():
    from tagpipe.evaluation import exact_match_scores

    gold = [[("a b", "r", "c")], [("d", "r", "e"), ("d", "s", "e")]]
    predicted = [[("a", "r", "c")], [("d", "r", "e")]]
    scores = exact_match_scores(gold, predicted)
    assert (scores["precision"], scores["recall"]) == (0.5, pytest.approx(1 / 3))
    assert scores["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_cli_evaluate_json(saved_models, tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    corpus = tmp_path / "tiny.json"
    corpus.write_text(json.dumps([{"text": " ".join(SENTENCE), "triple_list": [["cat", "r1", "mat"]]},
                                  {"text": "the dog ran", "triple_list": []}]))
    result = CliRunner().invoke(cli, ["triples-evaluate", str(corpus), "-m", str(saved_models["gplinker"]),
                                      "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert {"precision", "recall", "f1", "sentences"} <= set(scores) and scores["gold"] == 1


def test_plugin_is_declared_in_setup_cfg_and_builtins():
    import configparser

    from tagpipe.host import BUILTIN_PLUGINS
    from tests.conftest import REPO

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    entry_points = config["options.entry_points"]
    assert "triples = tagpipe.plugins.triples.hooks" in entry_points["tagpipe"]
    assert "tagpipe_triples = tagpipe.plugins.triples.spacy_component:make_triples" in entry_points["spacy_factories"]
    assert BUILTIN_PLUGINS["triples"] == "tagpipe.plugins.triples.hooks"


def test_spacy_component_runs_sentences_separately(saved_models):
    import spacy

    import tagpipe.plugins.triples.spacy_component  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("tagpipe_triples", config={"model": str(saved_models["gplinker"]), "threshold": -1e6})
    doc = nlp("the cat sat . the dog ran home .")
    sentence_of = {t.i: t.sent.start for t in doc}
    triples = doc._.tagpipe_triples
    assert triples and all(sentence_of[s.start] == sentence_of[o.end - 1] for s, _, o in triples)
    assert {sentence_of[s.start] for s, _, _ in triples} == {0, 4}


# -- the shared commands: train --task triples, evaluate, annotate ----------------------------------
def test_train_task_triples_fits_the_corpus_and_records_its_settings(tiny_triples_model):
    config = json.loads((tiny_triples_model / "config.json").read_text())
    assert config["task"] == "triples" and config["head"] == "pointer"
    settings = config["meta"]["settings"]
    assert (settings["epochs"], settings["batch_size"], settings["lr"], settings["encoder_lr"]) == (40, 3, 1e-2, 1e-3)
    assert settings["device"] == "cpu" and config["meta"]["dev_f1"] == 1.0  # a fraction, as for taggers
    assert config["relations"] == RELATIONS  # those of the training file, without --relations


def test_train_task_triples_takes_config_keys_and_its_own_options(tiny_bert_dir, tiny_webnlg, tmp_path):
    from tests.conftest import invoke_cli

    relations = tmp_path / "rel2id.json"
    relations.write_text(json.dumps([{"r0": 0, "r1": 1, "r2": 2, "unseen": 3}]))
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"task": "triples", "head": "gplinker", "efficient": True, "epochs": 1,
                                  "limit": 2, "weight_decay": 0.0, "relations": str(relations)}))
    result = invoke_cli("train", "--config", config, "--train", tiny_webnlg, "--dev", tiny_webnlg, "--pretrained",
                        tiny_bert_dir, "-o", tmp_path / "m", "--device", "cpu", "--seed", "3")
    assert "best dev F1" in result.stdout and '"epoch": 1' in result.stderr
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["head"], saved["head_config"], saved["relations"][-1]) == ("gplinker", {"efficient": True}, "unseen")
    settings = saved["meta"]["settings"]
    assert (settings["limit"], settings["weight_decay"], settings["seed"], settings["epochs"]) == (2, 0.0, 3, 1)


@pytest.mark.parametrize("args,message", [
    (["--decoder", "crf"], "--decoder: not an option of task 'triples'"),
    (["--format", "conll"], "reads --format webnlg"),
    (["--efficient"], "--efficient is a variant of --head gplinker"),
    (["--max-source-length", "8"], "--max-source-length: not an option of task 'triples'"),
])
def test_train_task_triples_refuses_what_it_cannot_use(tiny_bert_dir, tiny_webnlg, tmp_path, args, message):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    result = CliRunner().invoke(cli, ["train", "--task", "triples", "--train", str(tiny_webnlg), "--dev",
                                      str(tiny_webnlg), "--pretrained", str(tiny_bert_dir), "-o", str(tmp_path / "m"),
                                      *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_evaluate_a_triples_model(tiny_triples_model, tiny_webnlg):
    from click.testing import CliRunner

    from tagpipe.cli import cli
    from tests.conftest import invoke_cli

    scores = json.loads(invoke_cli("evaluate", tiny_webnlg, "-m", tiny_triples_model, "--json").stdout)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)  # fractions, as for NER
    assert (scores["gold"], scores["sentences"], scores["head"]) == (4, 3, "pointer")
    table = invoke_cli("evaluate", tiny_webnlg, "-m", tiny_triples_model, "--threads", "1").stdout
    assert "F1 100.00" in table and "4 gold triples" in table
    alias = json.loads(invoke_cli("triples-evaluate", tiny_webnlg, "-m", tiny_triples_model, "--json").stdout)
    assert {k: v for k, v in alias.items() if k != "sentences_per_s"} == \
        {k: v for k, v in scores.items() if k != "sentences_per_s"}
    refused = CliRunner().invoke(cli, ["evaluate", str(tiny_webnlg), "-m", str(tiny_triples_model),
                                       "--scheme", "bioes"])
    assert refused.exit_code == 1 and "--scheme: not an option of task 'triples'" in refused.output


def test_predict_gives_the_records_triples(tiny_triples_model):
    import tagpipe

    predictor = tagpipe.load(str(tiny_triples_model))
    (record,) = predictor.predict(["the cat sat on the mat ."])
    assert record["entities"] == [] and sorted(record["triples"], key=lambda t: t["relation"]) == [
        {"subject": "cat", "relation": "r0", "object": "the mat", "subject_span": [4, 7], "object_span": [15, 22]},
        {"subject": "cat", "relation": "r1", "object": "mat", "subject_span": [4, 7], "object_span": [19, 22]}]


# -- linearised triples (seq2seq on WebNLG) -----------------------------------------------------------
def test_linearise_and_parse_back():
    from tagpipe.corpora.webnlg import is_linearised, linearise, parse_linearised

    triples = [("1 . FC Köln", "manager", "Peter Stöger"), ("1 . FC Köln", "season", "2014")]
    text = linearise(triples)
    assert text == "1 . FC Köln | manager | Peter Stöger ; 1 . FC Köln | season | 2014"
    assert parse_linearised(text) == triples and is_linearised(text)
    # generated text: any spacing, a broken chunk and a repeat are passed over
    assert parse_linearised("a|r|b;  a | r |  b ; c | r ; | r | d ; e | s | f") == [("a", "r", "b"), ("e", "s", "f")]
    assert not is_linearised("Rome is the capital of Italy .") and not is_linearised("a | r | b ; c | r")


def test_webnlg_pairs_both_ways(tiny_webnlg):
    from tagpipe.corpora.webnlg import webnlg_pairs

    text2triples = webnlg_pairs(tiny_webnlg, "text2triples")
    assert text2triples[0] == {"source": "the cat sat on the mat .", "target": "cat | r1 | mat ; cat | r0 | the mat"}
    assert webnlg_pairs(tiny_webnlg, "triples2text") == [{"source": p["target"], "target": p["source"]}
                                                         for p in text2triples]
    with pytest.raises(ValueError, match="direction"):
        webnlg_pairs(tiny_webnlg, "both")


def test_linearisation_is_lossless_on_the_real_files():
    from tagpipe.corpora.webnlg import parse_linearised, read_webnlg, webnlg_pairs

    path = shared_path("webnlg", "train.json")
    pairs = webnlg_pairs(path, "text2triples")
    assert [parse_linearised(p["target"]) for p in pairs] == [
        [tuple(t) for t in s.extra["triple_strings"]] for s in read_webnlg(path)]
