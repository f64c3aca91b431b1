"""``tagpipe train``: train a model of any registered task (a tagger by default); ``--config FILE``
supplies defaults that flags override. The task does the training (``pipeline/tasks.py``), and may
add options of its own to this command."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from tagpipe.commands.options import device_option, json_option, quiet_option, threads_option
from tagpipe.training.settings import check_output, check_values, check_vectors_path, read_config_file


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: the file's values become defaults, so explicit flags still win."""
    if value:
        values = read_config_file(value)
        if "format" in values:  # the option's parameter is format_ (format is a builtin)
            values["format_"] = values.pop("format")
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


class TrainCommand(click.Command):
    """``train`` with the options the registered tasks add, after its own (and in its --help)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own = len(self.params)
        return [*params[:own], *task_options(), *params[own:]]


def task_options(*, warn: bool = True) -> list[click.Option]:
    """The registered tasks' ``train`` options; one whose name is taken is left out and added to the
    registry's problems (``tagpipe plugins``), with a warning on stderr the first time (``warn``)."""
    from tagpipe.host import get_registry
    from tagpipe.tasks import train_options

    errors = get_registry().errors
    before = len(errors)
    options = train_options({p.name for p in train.params if p.name} | {"help"})
    for error in errors[before:] if warn else ():
        click.echo(f"warning: {error}", err=True)
    return options


@click.command(cls=TrainCommand)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, help="JSON or TOML file of settings (keys as these options).")
@click.option("--train", required=True, help="Training corpus.")
@click.option("--dev", help="Development corpus (model selection by dev F1 / accuracy).")
@click.option("--output", "-o", default="models/tagger", show_default=True, help="Model folder to write.")
@click.option("--format", "format_", default="conll", show_default=True, help="Corpus format (see `tagpipe plugins`).")
@click.option("--task", default="ner", show_default=True,
              help="ner, tag, or a plugin's task: triples, seq2seq, multi (`tagpipe plugins`). The options below "
                   "are the taggers'; other tasks take a subset and have their own defaults (docs/triples.md, "
                   "docs/seq2seq.md, docs/training.md for multi).")
@click.option("--scheme", default="iob2", show_default=True, help="Scheme of the files: iob1/iob2/bioes/bmes.")
@click.option("--tag-column", default=None, help="Tag column: CoNLL index (default -1) or CoNLL-U field (upos).")
@click.option("--lang", default="en", show_default=True, help="spaCy language of the prediction tokenizer.")
@click.option("--encoder", default="bilstm", show_default=True,
              help="Encoder registry name (or bilstm / bert / idcnn / transformer).")
@click.option("--decoder", default="crf", show_default=True, help="Decoder name (or softmax/crf/memm/bimemm).")
@click.option("--pretrained", default=None, type=click.Path(file_okay=False),
              help="Local HuggingFace model folder for --encoder bert (sets encoder_config pretrained).")
@click.option("--vectors", default=None, type=click.Path(),
              help="Pretrained word vectors for bilstm/idcnn: a GloVe/word2vec text file (.gz too) or a spaCy "
                   "pipeline or `spacy init vectors` folder (sets encoder_config pretrained_vectors).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Sentences per forward pass (under torchrun: the global batch, split across ranks).")
@click.option("--accumulate", type=int, default=1, show_default=True,
              help="Gradient accumulation: passes per optimizer step (a step sees batch-size x N sentences).")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Learning rate (decoder, new weights).")
@click.option("--encoder-lr", type=float, default=None,
              help="Learning rate of pretrained encoder weights (bert); default --lr.")
@click.option("--optimizer", default="adamw", show_default=True,
              help="adamw (alias adam), adafactor (factored second moments: less memory), sgd, adax, or a plugin's "
                   "registered optimizer (`tagpipe plugins`).")
@click.option("--lr-scaling", type=click.Choice(["sqrt", "linear", "none"]), default=None,
              help="Scale --lr and --encoder-lr by (global batch / --reference-batch-size)^(1/2) or ^1; default: "
                   "the optimizer's (sqrt for Adam-type, linear for sgd).")
@click.option("--reference-batch-size", type=int, default=None,
              help="The global batch (batch-size x accumulate) --lr was tuned for; default --batch-size.")
@click.option("--flood", type=float, default=0.0, show_default=True,
              help="Flooding: train on |loss - B| + B, gradient ascent below B (0: off).")
@click.option("--patience", type=int, default=8,
              show_default=True, help="Epochs without a better dev score before stopping.")
@click.option("--average", type=int, default=0, show_default=True, help="Average the K best dev checkpoints.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@threads_option
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="bf16/fp16: autocast (fp16 with gradient scaling); bf16 also works on CPU.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute encoder activations in backward (less memory).")
@click.option("--compile", is_flag=True, help="torch.compile the encoder.")
@click.option("--invalid-tags", type=click.Choice(["repair", "drop"]), default="repair", show_default=True,
              help="NER sentences whose tags break --scheme: repair (read leniently) or drop.")
@click.option("--save-dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
              show_default=True, help="Weight dtype in the saved model.")
@click.option("--max-sentence-length", type=int, default=1000, show_default=True,
              help="Refuse (file:line) a training or dev sentence of more tokens than this.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint, if it was made by this run: the "
              "same settings and the same corpora (by content).")
@click.option("--allow-change", default="epochs,patience", show_default=True,
              help="With --resume: settings that may differ from the checkpoint's (of epochs, patience, average, "
                   "save-dtype, max-sentence-length, compile, grad-checkpointing; 'none': none).")
@quiet_option
@json_option
@click.pass_context
def train(ctx: click.Context, as_json: bool, **options) -> None:
    """Train a model (a tagger unless --task says otherwise) and write the best dev checkpoint to OUTPUT.

    Under ``torchrun --nproc-per-node N`` a tagger trains data-parallel; --batch-size stays the global
    batch (see docs/scaling.md). --json: the task's messages go to stderr and stdout gets one object,
    {"task", "output", "best_epoch", "scores" (fractions), "loss", "seconds"}."""
    from tagpipe.tasks import Options, get_task

    check_values(options)  # before any file is read or model built, whatever the task
    check_output(options["output"], {"--train": options["train"], "--dev": options["dev"]})
    if options.get("vectors"):
        check_vectors_path(options["vectors"])
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        get_task(options["task"]).train(Options.from_context(ctx, options))
    if as_json:
        click.echo(json.dumps(train_summary(options["output"], time.perf_counter() - started), indent=2))


def train_summary(output: str | Path, seconds: float) -> dict[str, Any]:
    """What ``train --json`` prints, read back from the model folder's ``config.json`` (any task's meta:
    taggers' ``best_dev``, triples' ``best_epoch``, seq2seq's kept ``epochs`` and loss lists)."""
    from tagpipe.model_folder import read_model_config

    config = read_model_config(output)
    task = config.get("task", "ner")
    meta = config.get("meta") or {}
    best = meta.get("best_dev") or {}
    epoch = meta.get("best_epoch", best.get("epoch", meta.get("epochs")))
    history = meta.get("history")
    record = next((h for h in history if h.get("epoch") == epoch), best) if isinstance(history, list) else best
    scores = {key[4:]: value for key, value in record.items()
              if key.startswith("dev_") and key != "dev_loss" and value is not None}
    if task == "tag" and "f1" in scores:  # a tagger's dev score is token accuracy
        scores = {"accuracy": scores.pop("f1"), **scores}
    loss = {"train": record.get("loss")}
    if isinstance(meta.get("train_loss"), list) and isinstance(epoch, int) and 0 < epoch <= len(meta["train_loss"]):
        loss = {"train": meta["train_loss"][epoch - 1]}
        if len(meta.get("dev_loss") or []) >= epoch:
            loss["dev"] = meta["dev_loss"][epoch - 1]
    summary: dict[str, Any] = {"task": task, "output": str(output), "best_epoch": epoch, "scores": scores,
                               "loss": loss, "seconds": round(seconds, 3)}
    if "averaged" in best:
        summary["averaged"] = best["averaged"]
    return summary
