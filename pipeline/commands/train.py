"""``tagpipe train``: train a tagger; ``--config FILE`` supplies defaults that flags override."""

from __future__ import annotations

import click

from pipeline.settings import TrainSettings, read_config_file


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: the file's values become defaults, so explicit flags still win."""
    if value:
        values = read_config_file(value)
        if "format" in values:  # the option's parameter is format_ (format is a builtin)
            values["format_"] = values.pop("format")
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, help="JSON or TOML file of settings (keys as these options).")
@click.option("--train", required=True, help="Training corpus.")
@click.option("--dev", help="Development corpus (model selection by dev F1 / accuracy).")
@click.option("--output", "-o", default="models/tagger", show_default=True, help="Model folder to write.")
@click.option("--format", "format_", default="conll", show_default=True, help="Corpus format (see `tagpipe plugins`).")
@click.option("--task", type=click.Choice(["ner", "tag"]), default="ner", show_default=True)
@click.option("--scheme", default="iob2", show_default=True, help="Scheme of the files: iob1/iob2/bioes/bmes.")
@click.option("--tag-column", default=None, help="Tag column: CoNLL index (default -1) or CoNLL-U field (upos).")
@click.option("--lang", default="en", show_default=True, help="spaCy language of the prediction tokenizer.")
@click.option("--encoder", default="bilstm", show_default=True, help="Encoder registry name (or bilstm / bert).")
@click.option("--decoder", default="crf", show_default=True, help="Decoder name (or softmax/crf/memm/bimemm).")
@click.option("--pretrained", default=None, type=click.Path(file_okay=False),
              help="Local HuggingFace model folder for --encoder bert (sets encoder_config pretrained).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Sentences per forward pass (under torchrun: the global batch, split across ranks).")
@click.option("--accumulate", type=int, default=1, show_default=True,
              help="Gradient accumulation: passes per optimizer step (a step sees batch-size x N sentences).")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Learning rate (decoder, new weights).")
@click.option("--encoder-lr", type=float, default=None,
              help="Learning rate of pretrained encoder weights (bert); default --lr.")
@click.option("--optimizer", type=click.Choice(["adamw", "adam", "adafactor", "sgd"]), default="adamw",
              show_default=True, help="adam is an alias of adamw; adafactor factors second moments (less memory).")
@click.option("--patience", type=int, default=8,
              show_default=True, help="Epochs without a better dev score before stopping.")
@click.option("--average", type=int, default=0, show_default=True, help="Average the K best dev checkpoints.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="bf16/fp16: autocast (fp16 with gradient scaling); bf16 also works on CPU.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute encoder activations in backward (less memory).")
@click.option("--compile", is_flag=True, help="torch.compile the encoder.")
@click.option("--invalid-tags", type=click.Choice(["repair", "drop"]), default="repair", show_default=True,
              help="NER sentences whose tags break --scheme: repair (read leniently) or drop.")
@click.option("--save-dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
              show_default=True, help="Weight dtype in the saved model.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx: click.Context, format_: str, tag_column: str | None, resume: bool, quiet: bool, **options) -> None:
    """Train a tagger and write the best dev checkpoint to OUTPUT.

    Under ``torchrun --nproc-per-node N`` it trains data-parallel; --batch-size stays the global
    batch (see docs/scaling.md)."""
    from pipeline.data import parse_column
    from pipeline.distributed import exit_launched_process, is_main
    from pipeline.training import Trainer

    extra = {k: v for k, v in (ctx.default_map or {}).items() if k in {"encoder_config", "decoder_config", "warmup",
                                                                          "lr_final", "clip", "weight_decay"}}
    column = parse_column(tag_column)
    settings = TrainSettings.from_dict({**options, **extra, "format": format_, "tag_column": column})
    result = Trainer(settings, resume=resume, log=click.echo, progress=not quiet).run()
    best = result["best"]
    if is_main():
        click.echo(f"best dev score {best['f1'] * 100:.2f} at epoch {best['epoch']}; model in {settings.output}")
    exit_launched_process()
