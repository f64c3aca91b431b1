"""``tagpipe compare``: train a grid of encoders x decoders x seeds on one corpus and report.

Each cell (encoder, decoder, seed) trains with the same :class:`~tagpipe.training.loop.Trainer` as
``tagpipe train`` into ``OUTPUT/runs/<encoder>-<decoder>-seed<k>/`` (a model folder that
``tagpipe evaluate`` reads), is scored on the test corpus and timed, and writes ``result.json``
there. A cell with a ``result.json`` is finished and a later run skips it, so an interrupted grid
resumes; a cell interrupted mid-training resumes from its ``checkpoint/``. The report covers every
finished cell under ``OUTPUT/runs``, so a second run with other encoders (and settings of their
own) adds rows to the same table: ``compare.md``, ``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tagpipe.corpora.io import atomic_write
from tagpipe.corpora.schemes import convert
from tagpipe.corpora.types import Sentence
from tagpipe.errors import TagpipeError
from tagpipe.training.settings import DECODER_ALIASES, ENCODER_ALIASES, TrainSettings

RUNS_DIR = "runs"
RESULT_FILE = "result.json"
RESULT_VERSION = 1
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")  # a label names folders: no '/', no spaces
#: settings that may differ between the seeds of one row: the seed itself, where the run went and how fast it ran
RUN_ONLY = ("output", "seed", "device", "threads")
#: settings every row of one table shares (plus the test corpus)
CORPUS_KEYS = ("train", "dev", "format", "task", "scheme", "tag_column", "lang")
DECODER_ORDER = ("softmax", "memm", "bimemm", "crf")  # rows of a report: cheapest decoder first
MIN_DECODE_SECONDS = 1.0  # decoding a small test set is repeated for at least this long (20 passes at most)

Log = Callable[[str], None]


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder of the grid: its label (in folder names and the table), registry name and pretrained folder."""

    label: str
    name: str
    pretrained: str | None = None


def parse_encoder(spec: str) -> EncoderSpec:
    """``[LABEL=]ENCODER[:PRETRAINED]``: ``bilstm``, ``bert:models/minilm``, ``minilm=bert:models/minilm``.

    ENCODER is a registry name or an alias (``bilstm``, ``bert``); the label defaults to the alias."""
    label, name = "", spec.strip()
    head = name.split(":", 1)[0]
    if "=" in head:  # an '=' inside the path is not a label
        label, name = name.split("=", 1)
    name, _, pretrained = name.partition(":")
    name = ENCODER_ALIASES.get(name, name)
    label = label or short_name(name, ENCODER_ALIASES)
    if not name or not LABEL.match(label):
        raise TagpipeError(f"--encoder {spec!r}: expected [LABEL=]ENCODER[:PRETRAINED] with a LABEL of letters, "
                           "digits, '.', '_', '+' or '-'")
    return EncoderSpec(label, name, pretrained or None)


def short_name(name: str, aliases: dict[str, str]) -> str:
    """``tagpipe.crf.v1`` -> ``crf``: the alias of a registry name, or the name itself."""
    return next((alias for alias, full in aliases.items() if full == name), name)


@dataclass(frozen=True)
class Cell:
    encoder: EncoderSpec
    decoder: str  # registry name
    seed: int

    @property
    def decoder_label(self) -> str:
        return short_name(self.decoder, DECODER_ALIASES)

    @property
    def name(self) -> str:
        return f"{self.encoder.label}-{self.decoder_label}-seed{self.seed}"


@dataclass
class Grid:
    """What one ``tagpipe compare`` run trains: every encoder x decoder x seed with ``base`` settings."""

    encoders: list[EncoderSpec]
    decoders: list[str]  # registry names or aliases
    seeds: list[int]
    test: str
    output: Path
    base: dict[str, Any] = field(default_factory=dict)  # TrainSettings values but encoder, decoder, seed, output
    force: bool = False
    decode_batch_size: int = 128
    command: str = ""

    def cells(self) -> list[Cell]:
        decoders = list(dict.fromkeys(DECODER_ALIASES.get(d, d) for d in self.decoders))
        return [Cell(e, d, s) for e in self.encoders for d in decoders for s in self.seeds]

    def settings(self, cell: Cell) -> TrainSettings:
        values = {**self.base, "encoder": cell.encoder.name, "decoder": cell.decoder, "seed": cell.seed,
                  "output": str(self.output / RUNS_DIR / cell.name)}
        if cell.encoder.pretrained:
            values["pretrained"] = cell.encoder.pretrained
        return TrainSettings.from_dict(values)


def run_compare(grid: Grid, *, log: Log = print, warn: Log = print, progress: bool = True) -> dict[str, Any]:
    """Train the grid's unfinished cells, then write the report of every finished cell; returns the report.

    Problems found before training (unknown names, a finished cell trained with other settings)
    raise :class:`TagpipeError` at once; a cell that fails is reported at the end, after the others."""
    cells = grid.cells()
    settings = _check_grid(grid, cells)
    s = settings[cells[0]]
    if s.threads:
        import torch

        torch.set_num_threads(s.threads)
    from tagpipe.data import labelled_sentences

    test = labelled_sentences(grid.test, s.format, task=s.task, scheme=s.scheme, tag_column=s.tag_column)
    results = load_results(grid.output, warn)
    _check_results(grid, cells, settings, results)
    todo = [c for c in cells if grid.force or c.name not in results]
    log(f"{len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to train; {len(test)} test sentences")
    for cell in cells:
        if cell not in todo:
            log(f"{cell.name}: finished, skipped (--force retrains)")
    failed = []
    for number, cell in enumerate(todo, 1):
        log(f"cell {number}/{len(todo)}: {cell.name}")
        try:
            results[cell.name] = run_cell(cell, settings[cell], test, grid, log=log, progress=progress)
        except TagpipeError as exc:
            warn(f"{cell.name} failed: {exc}")
            failed.append(cell.name)
    report = build_report(grid, cells, list(results.values()))
    write_report(grid.output, report, warn)
    if failed:
        raise TagpipeError(f"{len(failed)} of {len(cells)} cells failed ({', '.join(failed)}); the report shows the "
                           "others, and a rerun retries the failed ones")
    return report


def _check_grid(grid: Grid, cells: list[Cell]) -> dict[Cell, TrainSettings]:
    """Every name registered, labels unique, settings valid: fail before hours of training, not after."""
    from tagpipe.host import get_registry

    if not cells:
        raise TagpipeError("compare needs at least one --encoder, one --decoder and one seed")
    registry = get_registry()
    for spec in grid.encoders:
        registry.entry("encoder", spec.name)
        if spec.pretrained and not Path(spec.pretrained).expanduser().is_dir():
            raise TagpipeError(f"--encoder {spec.label}: {spec.pretrained} is not a folder")
    for cell in cells:
        registry.entry("decoder", cell.decoder)
    labels = [spec.label for spec in grid.encoders]
    for label in labels:
        if labels.count(label) > 1:
            raise TagpipeError(f"two encoders are labelled {label!r}: give them distinct labels "
                               "(LABEL=ENCODER[:PRETRAINED])")
    if not Path(grid.test).exists():
        raise TagpipeError(f"no such file: {grid.test}")
    return {cell: grid.settings(cell) for cell in cells}


def load_results(output: Path, warn: Log = print) -> dict[str, dict[str, Any]]:
    """The ``result.json`` of every finished cell under ``OUTPUT/runs``, by cell name."""
    results = {}
    for path in sorted((output / RUNS_DIR).glob(f"*/{RESULT_FILE}")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            warn(f"warning: {path} ignored: {exc}")
            continue
        if result.get("version") != RESULT_VERSION:
            warn(f"warning: {path} ignored: result version {result.get('version')!r}, expected {RESULT_VERSION}")
            continue
        results[path.parent.name] = result
    return results


def comparable(settings: dict[str, Any], drop: Sequence[str] = RUN_ONLY) -> dict[str, Any]:
    """Settings as JSON values (tuples as lists), without the keys that may differ."""
    return {k: v for k, v in json.loads(json.dumps(settings)).items() if k not in drop}


def differences(now: dict[str, Any], then: dict[str, Any]) -> str:
    keys = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    return ", ".join(f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in keys)


def _check_results(grid: Grid, cells: list[Cell], settings: dict[Cell, TrainSettings],
                   results: dict[str, dict[str, Any]]) -> None:
    """Finished cells in OUTPUT must compare with this grid: same settings in a row, same corpora in the table."""
    rows = {(c.encoder.label, c.decoder_label): {**comparable(settings[c].to_dict()), "test": grid.test}
            for c in cells}
    corpora = {k: v for k, v in next(iter(rows.values())).items() if k in (*CORPUS_KEYS, "test")}
    retrained = {c.name for c in cells} if grid.force else set()
    problems = []
    for name, result in sorted(results.items()):
        if name in retrained:
            continue
        row = (result.get("encoder"), result.get("decoder"))
        then = {**comparable(result.get("settings", {})), "test": result.get("test_corpus")}
        if row in rows:
            diff = differences(rows[row], then)
        else:
            diff = differences(corpora, {k: then.get(k) for k in corpora})
        if diff:
            problems.append(f"{RUNS_DIR}/{name} ({diff})")
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise TagpipeError(f"{grid.output} holds cells trained with other settings: {'; '.join(problems[:3])}{more}. "
                           "Use --force to retrain this grid's cells, remove the other folders, or choose another "
                           "--output")


def run_cell(cell: Cell, settings: TrainSettings, test: Sequence[Sentence], grid: Grid, *, log: Log,
             progress: bool) -> dict[str, Any]:
    """Train one cell (resuming an interrupted one), measure it on ``test`` and write its ``result.json``."""
    from tagpipe.training.loop import Trainer

    folder = Path(settings.output)
    resume = not grid.force and _resumable(folder, settings)
    if not resume and folder.exists():
        shutil.rmtree(folder)  # a stale model must not pass for this run's
    trained = Trainer(settings, resume=resume, log=lambda line: log(f"[{cell.name}] {line}"), progress=progress).run()
    measured = measure(folder, test, settings, grid.decode_batch_size)
    history = trained["history"]
    result = {
        "version": RESULT_VERSION,
        "encoder": cell.encoder.label,
        "decoder": cell.decoder_label,
        "seed": cell.seed,
        "encoder_name": cell.encoder.name,
        "decoder_name": cell.decoder,
        "test_corpus": grid.test,
        **measured,
        "epochs": len(history),
        "seconds_per_epoch": statistics.fmean(h["seconds"] for h in history) if history else None,
        "best": trained["best"],
        "command": grid.command,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": comparable(settings.to_dict(), ()),
    }
    write_json(folder / RESULT_FILE, result)
    f1 = result["test"]["f1"] * 100
    log(f"{cell.name}: test {f1:.2f}, {result['seconds_per_epoch'] or 0:.1f} s/epoch, "
        f"{result['decode']['tokens_per_second']:,.0f} tokens/s")
    return result


def _resumable(folder: Path, settings: TrainSettings) -> bool:
    """An interrupted cell whose checkpoint was made with these settings."""
    from tagpipe.training.loop import CHECKPOINT_DIR, STATE_FILE

    checkpoint = folder / CHECKPOINT_DIR
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    then = config.get("meta", {}).get("settings", {})
    return (checkpoint / STATE_FILE).is_file() and comparable(then) == comparable(settings.to_dict())


def measure(folder: Path, test: Sequence[Sentence], settings: TrainSettings, batch_size: int) -> dict[str, Any]:
    """Test scores, decoding speed and trainable parameters of the model saved in ``folder``.

    Decoding is ``Tagger.tag`` over the test sentences (featurising included) on the training
    device, timed after one untimed warm-up batch; a small test set is tagged again until
    :data:`MIN_DECODE_SECONDS` have passed, so its speed is not a single noisy interval."""
    from tagpipe.evaluation import entity_scores, token_accuracy
    from tagpipe.model import Tagger
    from tagpipe.training.loop import resolve_device

    device = resolve_device(settings.device)
    model = Tagger.load(folder, device=device)
    tokens = [s.tokens for s in test]
    model.tag(tokens[:batch_size], batch_size=batch_size)  # warm-up: allocator, kernels, lazy initialisation
    passes, started = 0, time.perf_counter()
    while not passes or (time.perf_counter() - started < MIN_DECODE_SECONDS and passes < 20):
        predicted = model.tag(tokens, batch_size=batch_size)  # ends with .tolist(): CUDA work is done
        passes += 1
    seconds = time.perf_counter() - started
    gold = [s.tags for s in test]
    if model.task == "ner":
        scores = entity_scores(gold, [convert(p, model.scheme, "iob2") for p in predicted])
    else:
        scores = token_accuracy(gold, predicted)
        scores["f1"] = scores["accuracy"]
    count = sum(len(t) for t in tokens) * passes
    return {
        "test": scores,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "decode": {"tokens": count, "passes": passes, "seconds": seconds,
                   "tokens_per_second": count / max(seconds, 1e-9), "batch_size": batch_size},
        "machine": machine(device),
    }


def machine(device) -> dict[str, Any]:
    """Where a cell ran: platform, CPU, CPU count, torch threads, device."""
    import torch

    info = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(info: dict[str, Any]) -> str:
    gpu = f" ({info['gpu']})" if info.get("gpu") else ""
    return (f"{info['platform']}, {info['processor']}, {info['cpus']} CPUs, torch {info['torch']} with "
            f"{info['threads']} threads, device {info['device']}{gpu}")


# -- the report ----------------------------------------------------------------------------
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
    from tagpipe.training.loop import resolve_device

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
