"""The report of a ``tagpipe compare`` output folder: ``compare.json``, ``compare.md`` and ``compare.png``.

It covers every finished cell under ``OUTPUT/runs``, so a second run with other encoders (and
settings of their own) adds rows to the same table.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tagpipe.compare.grid import RESULT_VERSION, Cell, Grid
from tagpipe.compare.measuring import describe_machine, machine
from tagpipe.corpora.io import atomic_write

DECODER_ORDER = ("softmax", "memm", "bimemm", "crf")  # rows of a report: cheapest decoder first

Log = Callable[[str], None]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (n - 1; None for one value), min and max."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def build_report(grid: Grid, cells: Sequence[Cell], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every finished cell and, per (encoder, decoder), the spread of each measure over seeds."""
    first_finished: dict[str, str] = {}  # encoders in the order they were first trained, so reruns keep the rows
    for result in results:
        first_finished[result["encoder"]] = min(result["finished_at"], first_finished.get(result["encoder"], "~"))

    def order(result):
        enc, dec = result["encoder"], result["decoder"]
        rank = DECODER_ORDER.index(dec) if dec in DECODER_ORDER else len(DECODER_ORDER)
        return first_finished[enc], enc, rank, dec, result["seed"]

    ordered = sorted(results, key=order)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in ordered:
        rows.setdefault((result["encoder"], result["decoder"]), []).append(result)
    aggregates = [{
        "encoder": enc, "decoder": dec, "encoder_name": group[0]["encoder_name"],
        "decoder_name": group[0]["decoder_name"], "seeds": [r["seed"] for r in group],
        "f1": spread([r["test"]["f1"] for r in group]),
        "seconds_per_epoch": spread([r["seconds_per_epoch"] or 0.0 for r in group]),
        "tokens_per_second": spread([r["decode"]["tokens_per_second"] for r in group]),
        "parameters": max(r["parameters"] for r in group),
    } for (enc, dec), group in rows.items()]
    first = grid.settings(cells[0])
    return {
        "version": RESULT_VERSION,
        "task": first.task,
        "metric": "seqeval strict IOB2 micro F1" if first.task == "ner" else "token accuracy",
        "spread": "std is the sample standard deviation over seeds (n - 1)",
        "train": first.train, "dev": first.dev, "test": grid.test,
        "machine": machine(_device(first.device)),
        "command": grid.command,
        "results": aggregates,
        "cells": ordered,
    }


def _device(name: str):
    from tagpipe.devices import resolve_device

    return resolve_device(name)


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, with the corpora, machines and commands under it."""
    metric = "test F1 (%)" if report["task"] == "ner" else "test accuracy (%)"
    lines = ["| encoder | decoder | " + metric + " | seeds | s/epoch | decode tokens/s | parameters |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["results"]:
        f1 = f"{row['f1']['mean'] * 100:.2f}"
        if row["f1"]["std"] is not None:
            f1 += f" ± {row['f1']['std'] * 100:.2f}"
        lines.append(f"| {row['encoder']} | {row['decoder']} | {f1} | {len(row['seeds'])} | "
                     f"{row['seconds_per_epoch']['mean']:.2f} | {row['tokens_per_second']['mean']:,.0f} | "
                     f"{row['parameters']:,} |")
    dev = f", dev `{report['dev']}`" if report["dev"] else ""
    lines += ["", f"Trained on `{report['train']}`{dev}, tested on `{report['test']}`. {metric}: "
              f"{report['metric']}, mean ± sample standard deviation over the seeds. s/epoch: training seconds per "
              "epoch (dev evaluation excluded), mean over epochs and seeds. Decode tokens/s: `Tagger.tag` over the "
              "test set on the training device, after one warm-up batch (a small test set: repeated for a second). "
              "Parameters: trainable.", ""]
    machines: dict[str, list[str]] = {}
    for cell in report["cells"]:
        machines.setdefault(describe_machine(cell["machine"]), []).append(f"{cell['encoder']}-{cell['decoder']}")
    if len(machines) <= 1:
        lines.append(f"Machine: {next(iter(machines), describe_machine(report['machine']))}.")
    else:
        lines.append("Machines:")
        lines += [f"- {desc}: {', '.join(dict.fromkeys(rows))}" for desc, rows in machines.items()]
    commands = list(dict.fromkeys(c["command"] for c in report["cells"] if c.get("command")))
    if commands:
        lines += ["", "Commands:", "", "```bash", *commands, "```"]
    return "\n".join(lines) + "\n"


def write_report(output: Path, report: dict[str, Any], warn: Log = print) -> None:
    """``compare.json``, ``compare.md`` and (with matplotlib) ``compare.png``, each written atomically."""
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "compare.json", report)
    with atomic_write(output / "compare.md") as out:
        out.write("# Encoders x decoders\n\n" + markdown(report))
    write_chart(output / "compare.png", report, warn)


def write_json(path: Path, value: Any) -> None:
    with atomic_write(path) as out:
        json.dump(value, out, indent=2, ensure_ascii=False)
        out.write("\n")


def write_chart(path: Path, report: dict[str, Any], warn: Log = print) -> bool:
    """Test F1 with its spread, and decoding speed, per encoder x decoder; False without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warn(f"warning: matplotlib is not installed, {path.name} skipped (pip install matplotlib)")
        return False
    rows = report["results"]
    if not rows:
        return False
    labels = [f"{r['encoder']}\n{r['decoder']}" for r in rows]
    decoders = list(dict.fromkeys(r["decoder"] for r in rows))
    colors = [f"C{decoders.index(r['decoder']) % 10}" for r in rows]
    x = list(range(len(rows)))
    figure = Figure(figsize=(max(8.0, 1.6 * len(rows)), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for i, row in enumerate(rows):  # points, not bars: F1 differences are small next to 100
        std = (row["f1"]["std"] or 0.0) * 100
        left.errorbar([i], [row["f1"]["mean"] * 100], yerr=[std], fmt="o", color=colors[i], capsize=4)
    metric = "test F1 (%)" if report["task"] == "ner" else "test accuracy (%)"
    left.set(ylabel=metric, title=f"{metric}: mean ± std over seeds")
    right.bar(x, [r["tokens_per_second"]["mean"] for r in rows], color=colors)
    right.set(ylabel="tokens/s", title="decoding speed (test set)")
    for axes in (left, right):
        axes.set_xticks(x, labels)
        axes.set_xlim(-0.5, len(rows) - 0.5)
        axes.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    with atomic_write(path) as out:  # a text stream over a binary file: write the PNG to its buffer
        out.buffer.write(buffer.getvalue())
    return True
