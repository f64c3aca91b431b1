"""``tagpipe export MODEL --to hf|onnx OUT``. Only click and torch-free modules are imported here."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tagpipe.plugins.export.checks import LABEL_NAMES, TARGETS, check_out, check_source


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="hf: a Hugging Face token-classification folder (BERT-encoder taggers); onnx: an ONNX graph "
                   "and what onnxruntime needs to tag without torch (BiLSTM taggers).")
@click.option("--labels", type=click.Choice(LABEL_NAMES), default="iob2", show_default=True,
              help="--to hf: id2label names; iob2 names BIOES classes by their IOB2 meaning (S-X as B-X, E-X as "
                   "I-X) so HF's entity grouping works; model keeps our tag names.")
@click.option("--opset", type=click.IntRange(13, None), default=17, show_default=True,
              help="--to onnx: the ONNX opset of the graph.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as one JSON object on stdout.")
def export(model: Path, out: Path, target: str, labels: str, opset: int, as_json: bool) -> None:
    """Export the tagger in MODEL to OUT (a new or empty folder), as --to says.

    \b
    tagpipe export out/minilm-crf --to hf hf-model
    tagpipe export out/bilstm-crf --to onnx onnx-model
    """
    check_source(model, target)  # before torch loads: a model the target cannot express is one line
    check_out(out)
    if target == "hf":
        from tagpipe.plugins.export.hf import export_hf

        summary = export_hf(model, out, labels=labels)
        what = f"{summary['architecture']}, {summary['labels']} labels"
        if summary["crf_transitions"]:
            what += ", CRF transitions in crf_transitions.json"
    else:
        from tagpipe.plugins.export.onnx_export import export_onnx

        summary = export_onnx(model, out, opset=opset)
        what = f"model.onnx (opset {opset}, {summary['decoding']} decoding) for tagpipe.plugins.export.onnx_runtime"
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"exported {model} to {out}: {what}")

