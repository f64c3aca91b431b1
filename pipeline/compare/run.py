"""``tagpipe compare``: train a grid of encoders x decoders x seeds on one corpus and report.

Each cell (encoder, decoder, seed) trains with the same :class:`~tagpipe.training.loop.Trainer` as
``tagpipe train`` into ``OUTPUT/runs/<encoder>-<decoder>-seed<k>/`` (a model folder that
``tagpipe evaluate`` reads), is scored on the test corpus and timed
(:mod:`tagpipe.compare.measuring`), and writes ``result.json`` there. A cell with a
``result.json`` is finished and a later run skips it, so an interrupted grid resumes; a cell
interrupted mid-training resumes from its ``checkpoint/`` when that is whole and was made with the
cell's settings and corpora (``tagpipe.training.checkpoints``); otherwise the cell trains afresh. The report
(:mod:`tagpipe.compare.report`) covers every finished cell under ``OUTPUT/runs``, so a second run
with other encoders (and settings of their own) adds rows to the same table: ``compare.md``,
``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tagpipe.compare.grid import RESULT_FILE, RESULT_VERSION, RUNS_DIR, Cell, Grid
from tagpipe.compare.measuring import measure
from tagpipe.compare.report import Log, build_report, write_json, write_report
from tagpipe.corpora.types import Sentence
from tagpipe.errors import TagpipeError
from tagpipe.training.settings import TrainSettings, upgrade_saved

#: settings that may differ between the seeds of one row: the seed itself, where the run went and how fast it ran
RUN_ONLY = ("output", "seed", "device", "threads")
#: settings every row of one table shares (plus the test corpus)
CORPUS_KEYS = ("train", "dev", "format", "task", "scheme", "tag_column", "lang")
#: every setting's default: a result.json written before a setting existed was trained with its default
_DEFAULTS = TrainSettings().to_dict()


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
    # cells another `tagpipe compare` finished into OUTPUT meanwhile (two grids sharing the cores) join the report;
    # an unreadable result.json was warned about once, at the start
    results = {**load_results(grid.output, lambda _: None), **results}
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
        saved = upgrade_saved(result.get("settings", {}))  # a cell trained by an older tagpipe, as saved now
        then = {**comparable(_DEFAULTS), **comparable(saved), "test": result.get("test_corpus")}
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
    resume = not grid.force and _resumable(folder, settings, lambda line: log(f"[{cell.name}] {line}"))
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


def _resumable(folder: Path, settings: TrainSettings, log: Log) -> bool:
    """An interrupted cell whose checkpoint is whole (its manifest verified) and was made with these settings
    (``RUN_ONLY`` apart) and corpora. Nothing of the checkpoint is loaded here: the trainer does that, reading
    data only. A checkpoint that fails a check is not resumed: the cell trains afresh."""
    from tagpipe.training import checkpoints

    if not any((folder / name).is_dir()
               for name in (checkpoints.CHECKPOINT_DIR, checkpoints.STAGING_DIR, checkpoints.PREVIOUS_DIR)):
        return False
    try:
        checkpoint = checkpoints.recover(folder, log)
        if checkpoint is None:
            return False
        manifest = checkpoints.read_manifest(checkpoint)
        data = checkpoints.data_fingerprints(settings.train, settings.dev)
    except TagpipeError as exc:
        log(f"not resumed, trained afresh: {exc}")
        return False
    _, refused = checkpoints.changes(manifest, settings.to_dict(), data, allow=RUN_ONLY)
    return not refused
