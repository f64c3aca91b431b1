"""Tasks: registered through ``register_tasks``, chosen by ``train --task`` and by a model folder's
config.json; a throwaway plugin task goes through train (with its own option), evaluate and annotate."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from tagpipe import hookimpl
from tagpipe import host as plugins
from tagpipe.cli import cli
from tagpipe.tasks import Options, Task


class EchoTask(Task):
    """Trains by writing a config.json; annotate runs spaCy's sentencizer and records the sentences."""

    name = "echo"
    spacy_factory = "sentencizer"
    spacy_module = "spacy"
    train_options = (click.Option(["--echo-word"], default=None, help="echo: the word to keep."),)

    def train(self, options: Options) -> None:
        options.check(self.name, {"task", "train", "output", "echo_word"}, ("shout",))
        out = Path(options.get("output", "models/echo"))
        out.mkdir(parents=True)
        config = {"task": "echo", "word": options.get("echo_word", "hi"), "shout": options.extra.get("shout", False),
                  "given": sorted(options.given)}
        (out / "config.json").write_text(json.dumps(config))
        click.echo(f"echo model in {out}")

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict:
        options.check(self.name, {"batch_size"})
        return {"lines": len(Path(corpus).read_text().splitlines()), "batch_size": options.get("batch_size", 7)}

    def component_config(self, model: Path, **settings) -> dict:
        return {}

    def record_fields(self, doc) -> dict:
        return {"sentences": [s.text for s in doc.sents]} if doc.has_annotation("SENT_START") else {}


class EchoPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("echo", EchoTask)


class ClashingTask(EchoTask):
    name = "clash"
    train_options = (click.Option(["--epochs"], type=int), click.Option(["--clash-ok"], is_flag=True))


class ClashingPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("clash", ClashingTask)


def install(plugin: object, name: str) -> None:
    pm = plugins.make_plugin_manager()
    pm.register_module(name, plugin, "tests")
    plugins.reset(pm)


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_builtin_tasks_come_through_the_hook():
    registry = plugins.get_registry()
    assert registry.errors == []
    assert {name: registry.entry("task", name).plugin for name in registry.names("task")} == {
        "ner": "builtin_tasks", "tag": "builtin_tasks", "triples": "triples", "seq2seq": "seq2seq",
        "multi": "multitask"}


def test_task_modules_name_their_components_extensions_right():
    import tagpipe.plugins.seq2seq.spacy_component
    import tagpipe.plugins.seq2seq.task
    import tagpipe.plugins.triples.spacy_component
    import tagpipe.plugins.triples.task

    assert tagpipe.plugins.triples.task.EXTENSION is tagpipe.plugins.triples.spacy_component.EXTENSION
    assert tagpipe.plugins.seq2seq.task.EXTENSION is tagpipe.plugins.seq2seq.spacy_component.EXTENSION


def test_a_plugin_task_trains_evaluates_and_annotates(tmp_path):
    install(EchoPlugin(), "echo")
    assert "--echo-word" in invoke("train", "--help").output

    config = tmp_path / "echo.toml"
    config.write_text('task = "echo"\nshout = true\n')
    result = invoke("train", "--config", config, "--train", "x", "-o", tmp_path / "m", "--echo-word", "yo")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"echo model in {tmp_path / 'm'}\n"
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved == {"task": "echo", "word": "yo", "shout": True, "given": ["echo_word", "output", "task", "train"]}

    corpus = tmp_path / "in.txt"
    corpus.write_text("One. Two.\nThree.\n")
    result = invoke("evaluate", corpus, "-m", tmp_path / "m", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"lines": 2, "batch_size": 7}  # the task's default, not the command's

    out = tmp_path / "out.jsonl"
    result = invoke("annotate", corpus, "-m", tmp_path / "m", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert [r["sentences"] for r in map(json.loads, out.read_text().splitlines())] == [["One.", "Two."], ["Three."]]


def test_options_a_task_cannot_use_are_refused_by_name(tmp_path):
    install(EchoPlugin(), "echo")
    result = invoke("train", "--task", "echo", "--train", "x", "-o", tmp_path / "m", "--decoder", "crf", "--lr", "1")
    assert result.exit_code == 1 and "--decoder, --lr: not an option of task 'echo'" in result.output
    result = invoke("train", "--task", "ner", "--train", "x", "--echo-word", "yo")
    assert result.exit_code == 1 and "--echo-word: not an option of task 'ner'" in result.output
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"task": "echo", "whisper": True}))
    result = invoke("train", "--config", config, "--train", "x", "-o", tmp_path / "m")
    assert result.exit_code == 1 and "--config keys whisper: not settings of task 'echo'" in result.output
    assert not (tmp_path / "m").exists()


def test_unknown_tasks_name_the_ones_available(tmp_path):
    result = invoke("train", "--task", "nope", "--train", "x")
    assert result.exit_code == 1
    assert "no task named 'nope' is registered (available: multi, ner, seq2seq, tag, triples)" in result.output
    (tmp_path / "config.json").write_text(json.dumps({"task": "nope"}))
    for args in (["evaluate", "x", "-m", tmp_path], ["annotate", "-", "-m", tmp_path]):
        result = invoke(*args)
        assert result.exit_code == 1 and "a model for task 'nope', which no installed plugin serves" in result.output
        assert "Traceback" not in result.output


def test_a_train_option_whose_name_is_taken_is_left_out_with_a_warning():
    install(ClashingPlugin(), "clash")
    result = invoke("train", "--help")
    assert result.exit_code == 0 and "--clash-ok" in result.output
    assert "task 'clash': train option --epochs refused: its name is taken" in result.stderr
    listing = invoke("plugins")
    assert "train option --epochs refused" in listing.stderr


def test_compare_trains_taggers_only():
    result = invoke("compare", "--task", "triples", "--train", "x", "--test", "y", "--encoder", "bilstm",
                    "--decoder", "crf")
    assert result.exit_code == 2 and "'triples' is not one of 'ner', 'tag'" in result.output
