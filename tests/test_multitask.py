"""The multi-task plugin as a whole: train (CLI), save, load, annotate, evaluate, spaCy, on a toy corpus
written here whose three columns (POS, chunk, NER) a small model can learn."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import invoke_cli

TINY = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "casing_dim": 4, "hidden": 16}
PEOPLE, SURNAMES = ["john", "mary", "paul", "anna"], ["smith", "jones"]
PLACES, VERBS, DETS, NOUNS = ["paris", "rome", "berlin"], ["visits", "likes", "sees"], ["the", "a"], ["city", "dog"]


def toy_conll(n: int, seed: int) -> str:
    """``word POS chunk NER`` sentences: a person (NNP NNP, NP, PER), a verb (VBZ, VP), a place (NNP, NP, LOC)
    or a noun phrase (DT NN, NP), a full stop."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        rows = [(rng.choice(PEOPLE).title(), "NNP", "B-NP", "B-PER"), (rng.choice(SURNAMES).title(), "NNP", "I-NP",
                                                                      "I-PER"), (rng.choice(VERBS), "VBZ", "B-VP", "O")]
        if rng.random() < 0.5:
            rows.append((rng.choice(PLACES).title(), "NNP", "B-NP", "B-LOC"))
        else:
            rows += [(rng.choice(DETS), "DT", "B-NP", "O"), (rng.choice(NOUNS), "NN", "I-NP", "O")]
        rows.append((".", ".", "O", "O"))
        lines += [" ".join(r) for r in rows] + [""]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi-corpus")
    (folder / "train.conll").write_text(toy_conll(120, 1))
    (folder / "dev.conll").write_text(toy_conll(30, 2))
    (folder / "config.json").write_text(json.dumps({"encoder_config": TINY}))
    return {"train": folder / "train.conll", "dev": folder / "dev.conll", "config": folder / "config.json"}


def train_args(corpus: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "multi", "--columns", "ner=3,pos=1,chunk=2", "--train", corpus["train"], "--dev",
            corpus["dev"], "-o", out, "--config", corpus["config"], "--lr", "0.02", "--batch-size", "8",
            "--device", "cpu", "--threads", "1", "-q", *extra]


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory) -> Path:
    """A model trained with main/auxiliary weighting and a softmax POS head."""
    out = tmp_path_factory.mktemp("multi-model") / "model"
    invoke_cli(*train_args(corpus, out, "--epochs", "12", "--task-weighting", "main-aux",
                           "--head-decoders", "pos=softmax"))
    return out


def test_every_head_learns_the_toy_corpus_and_evaluate_scores_each(model, corpus):
    scores = json.loads(invoke_cli("evaluate", corpus["dev"], "-m", model, "--json", "-q").output)
    assert scores["main"] == "ner"
    heads = scores["heads"]
    assert set(heads) == {"ner", "pos", "chunk"}
    assert heads["ner"]["f1"] > 0.9 and heads["chunk"]["f1"] > 0.9  # chance is far below (random spans)
    assert heads["pos"]["accuracy"] > 0.9  # 5 tags: chance about 0.2, the majority tag (NNP) 0.48
    assert set(heads["ner"]["per_type"]) == {"PER", "LOC"} and set(heads["chunk"]["per_type"]) == {"NP", "VP"}
    table = invoke_cli("evaluate", corpus["dev"], "-m", model, "-q").output
    assert "== ner (main)" in table and "== pos" in table and "== chunk" in table


def test_the_folder_records_every_head_and_loads_through_tagger_load(model):
    import tagpipe
    from tagpipe.model import Tagger
    from tagpipe.plugins.multitask.model import MultiTagger

    config = json.loads((model / "config.json").read_text())
    assert config["task"] == "multi" and config["main"] == "ner"
    assert {h["name"]: (h["column"], h["kind"], h["decoder"]["name"], h["spacy"]) for h in config["heads"]} == {
        "ner": (3, "span", "tagpipe.crf.v1", "ents"), "pos": (1, "tag", "tagpipe.softmax.v1", "tag"),
        "chunk": (2, "span", "tagpipe.crf.v1", "spans")}
    assert config["meta"]["multitask"]["weighting"] == "main-aux"
    assert sorted(p.name for p in model.iterdir() if p.is_file()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = Tagger.load(model)
    assert isinstance(loaded, MultiTagger)
    tags = loaded.tag([["Mary", "Jones", "sees", "Rome", "."]])
    assert tags == {"ner": [["B-PER", "I-PER", "O", "B-LOC", "O"]], "pos": [["NNP", "NNP", "VBZ", "NNP", "."]],
                    "chunk": [["B-NP", "I-NP", "B-VP", "B-NP", "O"]]}
    [record] = tagpipe.load(model).predict(["Anna Smith likes the dog ."])
    assert [e["text"] for e in record["entities"]] == ["Anna Smith"]
    assert record["pos"] == ["NNP", "NNP", "VBZ", "DT", "NN", "."]
    assert [(c["text"], c["label"]) for c in record["chunk"]] == [("Anna Smith", "NP"), ("likes", "VP"),
                                                                 ("the dog", "NP")]


def test_loading_imports_no_torch_compile_machinery(model):
    """The multi-task folder is size-checked like a tagger's (``tagpipe.model.build_fitting``), without the
    ~1.5 s import of torch._dynamo that initialising meta tensors costs."""
    import subprocess
    import sys

    code = ("import sys; from tagpipe.model import Tagger; Tagger.load(sys.argv[1]); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_annotate_writes_a_field_per_head_and_a_column_per_head(model, corpus, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("John Smith visits Paris .\n")
    invoke_cli("annotate", text, "-m", model, "-o", tmp_path / "out.jsonl", "-q")
    [record] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert record["ner"] == [{"start": 0, "end": 10, "label": "PER", "text": "John Smith"},
                             {"start": 18, "end": 23, "label": "LOC", "text": "Paris"}]
    assert record["entities"] == record["ner"]
    assert record["pos"] == ["NNP", "NNP", "VBZ", "NNP", "."]
    assert [c["label"] for c in record["chunk"]] == ["NP", "VP", "NP"]
    # CoNLL: the heads in the corpus's column order (POS chunk NER), so the output reads as the input did
    invoke_cli("annotate", corpus["dev"], "-m", model, "-o", tmp_path / "out.conll", "-q")
    lines = (tmp_path / "out.conll").read_text().splitlines()
    assert lines[0].split()[1:] in (["NNP", "B-NP", "B-PER"],)
    assert all(len(line.split()) == 4 for line in lines if line)
    scores = json.loads(invoke_cli("evaluate", tmp_path / "out.conll", "-m", model, "--json", "-q").output)
    assert all(s.get("f1", s.get("accuracy")) == 1.0 for s in scores["heads"].values())  # its own predictions


def test_the_spacy_component_sets_every_attribute_in_one_pass_and_round_trips(model, tmp_path):
    import pickle

    import spacy

    import tagpipe.plugins.multitask.spacy_component  # noqa: F401 - declares tagpipe_multi (entry point or not)

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_multi", config={"model": str(model)})
    doc = nlp("Mary Smith sees the city .")
    assert [(e.text, e.label_) for e in doc.ents] == [("Mary Smith", "PER")]
    assert [t.tag_ for t in doc] == ["NNP", "NNP", "VBZ", "DT", "NN", "."]
    assert [(s.text, s.label_) for s in doc.spans["chunk"]] == [("Mary Smith", "NP"), ("sees", "VP"),
                                                              ("the city", "NP")]
    assert doc._.tagpipe_heads["pos"][1] == [t.tag_ for t in doc]
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    doc2 = again("Mary Smith sees the city .")
    assert [(e.text, e.label_) for e in doc2.ents] == [(e.text, e.label_) for e in doc.ents]
    assert [t.tag_ for t in doc2] == [t.tag_ for t in doc]
    assert [(s.start, s.end, s.label_) for s in doc2.spans["chunk"]] == [(s.start, s.end, s.label_)
                                                                         for s in doc.spans["chunk"]]
    component = pickle.loads(pickle.dumps(again.get_pipe("tagpipe_multi")))  # nlp.pipe(n_process=2) does this
    assert component.model.tag([["Paul", "Jones", "likes", "Berlin", "."]])["ner"] == [["B-PER", "I-PER", "O",
                                                                                          "B-LOC", "O"]]


@pytest.mark.parametrize("extra", [["--task-weighting", "parallel"],
                                   ["--task-weighting", "fixed", "--task-weights", "ner=1,pos=0.5,chunk=0.5"],
                                   ["--task-weighting", "main-aux", "--main-task", "pos", "--accumulate", "2"]])
def test_each_weighting_trains_and_records_its_settings(corpus, tmp_path, extra):
    invoke_cli(*train_args(corpus, tmp_path / "m", "--epochs", "2", *extra))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["meta"]
    assert meta["multitask"]["weighting"] == extra[1]
    assert meta["multitask"]["main"] == ("pos" if "--main-task" in extra else "ner")
    if "--task-weights" in extra:
        assert meta["multitask"]["weights"] == {"ner": 1.0, "pos": 0.5, "chunk": 0.5}
    assert [set(h["losses"]) for h in meta["history"]] == [{"ner", "pos", "chunk"}] * 2


@pytest.mark.parametrize(("args", "message"), [
    ([], "--task multi needs --columns"),
    (["--columns", "ner=3"], "at least two heads"),
    (["--columns", "ner=3,pos=3"], "read the same column"),
    (["--columns", "ner=3,tokens=1"], "head name 'tokens' is not allowed"),
    (["--columns", "ner=3,pos=1:word"], "must be span or tag"),
    (["--columns", "ner=3,pos=1", "--task-weights", "chunk=2"], "'chunk' is no head"),
    (["--columns", "ner=3,pos=1", "--task-weights", "pos=-1"], "must be a finite number >= 0"),
    (["--columns", "ner=3,pos=1", "--main-task", "chunk"], "--main-task 'chunk' is no head"),
    (["--columns", "ner=3,pos=1", "--average", "2"], "--average: not an option of task 'multi'"),
    (["--columns", "ner=3,pos=1", "--private-layers", "chunk=1"], "--private-layers: 'chunk' is no head"),
    (["--columns", "ner=3,pos=1", "--private-layers", "ner=two"], "must be a whole number of layers"),
])
def test_bad_settings_are_one_line(corpus, tmp_path, args, message):
    from tagpipe.cli import cli

    result = CliRunner().invoke(cli, ["train", "--task", "multi", "--train", str(corpus["train"]), "-o",
                                      str(tmp_path / "m"), *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "m").exists()


def test_a_multi_option_given_to_a_tagger_is_refused(corpus, tmp_path):
    from tagpipe.cli import cli

    result = CliRunner().invoke(cli, ["train", "--train", str(corpus["train"]), "-o", str(tmp_path / "m"),
                                      "--columns", "ner=3,pos=1"])
    assert result.exit_code != 0 and "--columns: not an option of task 'ner'" in result.output


def test_a_private_layer_is_the_heads_own_saved_and_loaded(corpus, tmp_path):
    """``--private-layers ner=1``: NER reads a BiLSTM layer no other head sees; its weights are NER's own
    (the task weighting treats them as the head's, not the shared encoder's) and survive save/load."""
    from tagpipe.plugins.multitask.model import MultiTagger

    out = tmp_path / "m"
    invoke_cli(*train_args(corpus, out, "--epochs", "12", "--task-weighting", "main-aux",
                           "--private-layers", "ner=1,pos=0"))
    heads = {h["name"]: h for h in json.loads((out / "config.json").read_text())["heads"]}
    assert heads["ner"]["private"] == {"name": "tagpipe.bilstm.v1",
                                       "config": {"hidden": 16, "layers": 1, "dropout": 0.25}}
    assert "private" not in heads["pos"] and "private" not in heads["chunk"]
    model = MultiTagger.load(out)
    assert list(model.private) == ["ner"]
    private = {id(p) for p in model.private["ner"].parameters()}
    assert private <= {id(p) for p in model.head_parameters("ner")}
    assert not private & {id(p) for p in [*model.encoder.parameters(), *model.head_parameters("pos")]}
    assert model.heads["ner"].projection.in_features == 32  # the private BiLSTM's 2 x 16, not the encoder's
    tags = model.tag([["Mary", "Jones", "sees", "Rome", "."]])
    assert tags["ner"] == [["B-PER", "I-PER", "O", "B-LOC", "O"]]
    assert tags["chunk"] == [["B-NP", "I-NP", "B-VP", "B-NP", "O"]]
    scores = json.loads(invoke_cli("evaluate", corpus["dev"], "-m", out, "--json", "-q").output)["heads"]
    assert scores["ner"]["f1"] > 0.9 and scores["pos"]["accuracy"] > 0.9


@pytest.mark.parametrize(("private", "message"), [
    ({"name": "tagpipe.nosuch.v1"}, "nosuch"),
    ({"name": "tagpipe.bilstm.v1", "config": {"hidden": 0}}, "bad bilstm stage config"),
    ({"name": "tagpipe.bilstm.v1", "config": {"width": 3}}, "width"),
    ({"config": {}}, "private"),
    ("bilstm", "private"),
])
def test_a_broken_private_stage_in_config_json_is_one_model_error(model, tmp_path, private, message):
    import shutil

    from tagpipe.errors import ModelError
    from tagpipe.plugins.multitask.model import MultiTagger

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    config = json.loads((broken / "config.json").read_text())
    config["heads"][0]["private"] = private
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message) as caught:
        MultiTagger.load(broken)
    assert "config.json" in str(caught.value) and "\n" not in str(caught.value)
