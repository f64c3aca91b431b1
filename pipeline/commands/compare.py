"""``tagpipe compare``: train encoders x decoders x seeds on one corpus; a table of test F1 and speed.

The engine is ``tagpipe.compare.run``. The training options are ``tagpipe train``'s own (the same
click options, so defaults and help stay in step); ``--config FILE`` supplies defaults that flags
override, as for ``train``.
"""

from __future__ import annotations

import json
import shlex

import click
from click.core import ParameterSource

from tagpipe.commands.options import json_option
from tagpipe.commands.train import train
from tagpipe.training.settings import read_config_file

#: options of ``tagpipe train`` that ``compare`` takes as they are (click parameter names)
TRAIN_OPTIONS = ("train", "dev", "format_", "task", "scheme", "tag_column", "lang", "epochs", "batch_size",
                 "accumulate", "lr", "encoder_lr", "optimizer", "lr_scaling", "reference_batch_size", "flood",
                 "patience", "average", "device", "threads", "precision", "grad_checkpointing", "compile",
                 "invalid_tags", "save_dtype", "quiet")
#: settings the grid sets per cell; in a --config file they are the grid's defaults
GRID_KEYS = ("encoder", "decoder", "seed", "output")
CONFIG = "tagpipe.compare.config"


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: the file's values become the options' defaults, so explicit flags still win."""
    if value:
        values = read_config_file(value)
        ctx.meta[CONFIG] = (value, values)
        names = {"format": "format_"}
        defaults = {names.get(k, k): v for k, v in values.items()}
        ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in defaults.items() if k in TRAIN_OPTIONS}}
    return value


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma-separated lists alike: ``--seeds 1,2 --seeds 3`` -> 1, 2, 3."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, help="JSON or TOML file of training settings shared by every cell.")
@click.option("--test", required=True, help="Test corpus: every cell's F1 and decoding speed.")
@click.option("--encoder", "encoders", multiple=True, metavar="[LABEL=]ENCODER[:PRETRAINED]",
              help="An encoder of the grid, repeatable: bilstm, bert:MODEL_DIR, minilm=bert:MODEL_DIR. "
                   "LABEL names its rows and folders (default: the encoder's short name).")
@click.option("--decoder", "decoders", multiple=True, metavar="NAME[,NAME...]",
              help="Decoders of the grid (softmax, memm, bimemm, crf or registry names), repeatable.")
@click.option("--seeds", multiple=True, metavar="K[,K...]", help="Seeds of every cell, e.g. 1,2,3 (default: --config's "
                                                                "seed, or 0).")
@click.option("--output", "-o", default="out/compare", show_default=True,
              help="Folder of the report (compare.md/.json/.png) and of every cell's model (runs/).")
@click.option("--force", is_flag=True, help="Retrain this grid's finished cells instead of skipping them.")
@click.option("--decode-batch-size", type=int, default=128, show_default=True,
              help="Sentences per batch when timing decoding on the test set.")
@json_option
@click.pass_context
def compare(ctx: click.Context, test: str, encoders: tuple[str, ...], decoders: tuple[str, ...],
            seeds: tuple[str, ...], output: str, force: bool, decode_batch_size: int, format_: str,
            tag_column: str | None, quiet: bool, as_json: bool, **options) -> None:
    """Train every --encoder x --decoder x seed on one corpus and compare them.

    Each cell trains as `tagpipe train` would into OUTPUT/runs/ENCODER-DECODER-seedK/, then is
    scored on --test (seqeval strict micro F1) and timed. OUTPUT/compare.md, compare.json and
    compare.png report every finished cell in OUTPUT: mean ± std over seeds, seconds per epoch,
    decode tokens/s and parameters. A rerun skips finished cells (an interrupted grid resumes);
    another run into the same OUTPUT, e.g. a BERT encoder with its own settings, adds rows.
    --json prints compare.json's report on stdout (scores as fractions) and the log on stderr.
    """
    from pathlib import Path

    from tagpipe.compare.grid import Grid, parse_encoder
    from tagpipe.compare.report import markdown
    from tagpipe.compare.run import run_compare
    from tagpipe.data import parse_column

    config_path, config = ctx.meta.get(CONFIG, (None, {}))
    specs = _split(encoders) or ([config["encoder"]] if config.get("encoder") else [])
    names = _split(decoders) or ([config["decoder"]] if config.get("decoder") else [])
    if not specs or not names:
        raise click.UsageError("give at least one --encoder and one --decoder")
    try:
        seed_list = [int(s) for s in _split(seeds)] or [int(config.get("seed", 0))]
    except ValueError:
        raise click.BadParameter(f"{', '.join(seeds)}: seeds are integers", param_hint="--seeds") from None
    base = {k: v for k, v in config.items() if k not in GRID_KEYS}
    base.update(options, format=format_, tag_column=parse_column(tag_column))
    grid = Grid(encoders=[parse_encoder(s) for s in specs], decoders=names, seeds=list(dict.fromkeys(seed_list)),
                test=test, output=Path(output), base=base, force=force, decode_batch_size=decode_batch_size,
                command=_command_line(ctx, config_path))
    log = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    report = run_compare(grid, log=log, warn=lambda line: click.echo(line, err=True), progress=not quiet)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo("\n" + markdown(report).split("\n\n", 1)[0])
    click.echo(f"\nreport in {output}: compare.md, compare.json, compare.png")


# train's --task takes any registered task; a grid trains taggers only
_TASK = click.Option(["--task"], type=click.Choice(["ner", "tag"]), default="ner", show_default=True)
compare.params.extend(_TASK if p.name == "task" else p for p in train.params if p.name in TRAIN_OPTIONS)


def _command_line(ctx: click.Context, config_path: str | None) -> str:
    """The options given on the command line, as a command that reruns this grid."""
    parts = ["tagpipe", "compare", *(["--config", config_path] if config_path else [])]
    for param in ctx.command.params:
        if param.name not in ctx.params or ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        flag = next(o for o in param.opts if o.startswith("--"))
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            parts += [flag] if value else []
        elif getattr(param, "multiple", False):
            parts += [item for v in value for item in (flag, str(v))]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)
