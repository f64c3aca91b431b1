"""The engine of ``tagpipe annotate``: stream documents through a spaCy pipeline into outputs.

One spaCy ``Language`` does the work: a blank tokenizer of the first model's language (or a saved
pipeline, ``--pipeline``) plus one tagpipe component per ``--model``, so a chain of models hands
``Doc`` objects from one to the next. Documents are read, annotated and written in fixed-size
batches, which keeps memory flat however large the input, and makes the output independent of
``--n-process`` and of where a run was interrupted: batch *k* always holds the same documents.

Resuming: outputs grow append-only partial files; every second or so, after a flush, a small
sidecar records how many input documents are done, their digest and each partial file's size.
``--resume`` reads those documents again (refusing an input that changed), truncates the partial
files to those sizes and goes on, so the final file equals an uninterrupted run's byte for byte.

Before any of this, the outputs are checked and locked for the run (``tagpipe.annotating.targets``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpipe.annotating.outputs import HtmlOutput, Output, make_output
from tagpipe.annotating.resume import Checkpoints, ResumeState
from tagpipe.annotating.sources import Counts, Item, input_files, read_items
from tagpipe.annotating.targets import check_not_inputs, check_targets, locked
from tagpipe.errors import CorpusError, TagpipeError
from tagpipe.faults import kill_point
from tagpipe.memory import trim_freed_memory

WARNING_LIMIT = 100  # bad lines shown one by one; the rest are counted in the summary


@dataclass
class AnnotateSettings:
    """Everything one ``annotate`` run depends on (the CLI options, as a value)."""

    inputs: list[str]
    input_format: str | None = None
    models: list[str] = field(default_factory=list)
    pipeline: str | None = None
    output: str = "-"
    output_format: str | None = None
    html: str | None = None
    html_page_size: int = 1000
    batch_size: int = 1024  # documents read, annotated and written together
    n_process: int = 1
    device: str = "cpu"
    threads: int = 1
    existing_ents: str | None = None
    scores: bool = True  # entity confidences (CRF marginals): --no-scores skips that pass
    precision: str = "fp32"  # bf16/fp16: taggers' encoders under autocast
    strict: bool = False
    resume: bool = False
    checkpoint_seconds: float = 1.0  # how often the resume sidecar is written
    engine: str = "local"  # "local" (this process, or --n-process workers) or "ray" (tagpipe.annotating.ray_engine)
    address: str | None = None  # Ray: a cluster to join (None: start a local instance)
    num_workers: int | None = None  # Ray: actors (None: one per --threads CPUs, or per GPU share)
    gpus_per_worker: float = 0.0
    unordered: bool = False  # Ray: write batches as they finish (records keyed by id)
    ray_dashboard: bool = False  # Ray: a local instance's dashboard, on 127.0.0.1

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its ``--resume`` (not speed settings)."""
        absolute = [p if p == "-" else str(Path(p).resolve()) for p in self.inputs]
        return {"inputs": absolute, "input_format": self.input_format, "models": self.models,
                "pipeline": self.pipeline, "output_format": self.output_format, "html": self.html,
                "html_page_size": self.html_page_size, "existing_ents": self.existing_ents,
                "scores": self.scores, "unordered": self.unordered}


@dataclass
class Stats:
    """Counts for the summary line (``docs``/``tokens`` include documents of a resumed run)."""

    docs: int = 0
    tokens: int = 0
    new_tokens: int = 0  # tokens of this run only (the rates)
    skipped: int = 0
    blank: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    ignored_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        new_docs = self.docs - self.resumed_from
        seconds = max(self.seconds, 1e-9)
        line = (f"annotated {self.docs} documents ({self.tokens} tokens) in {self.seconds:.1f} s: "
                f"{new_docs / seconds:.0f} docs/s, {self.new_tokens / seconds:.0f} tokens/s; "
                f"{self.skipped} bad lines skipped")
        if self.blank:
            line += f", {self.blank} blank lines"
        if self.ignored_files:
            line += f", {len(self.ignored_files)} files ignored"
        if self.resumed_from:
            line += f"; resumed after {self.resumed_from} documents"
        return line


class Reporter:
    """``on_error`` for the readers: count and warn (or raise with ``--strict``)."""

    def __init__(self, strict: bool, warn: Callable[[str], None]) -> None:
        self.strict = strict
        self.warn = warn
        self.skipped = 0
        self.silent = False  # while skipping documents a resumed run has already done

    def __call__(self, error: CorpusError) -> None:
        if self.strict:
            raise error
        self.skipped += 1
        if self.silent:
            return
        if self.skipped <= WARNING_LIMIT:
            self.warn(f"warning: skipped {error}")
        elif self.skipped == WARNING_LIMIT + 1:
            self.warn("warning: more bad lines; they are counted in the summary but not shown")


def build_nlp(models: list[str], pipeline_dir: str | None = None, *, device: str = "cpu",
              existing_ents: str | None = None, scores: bool = True, precision: str = "fp32"):
    """A spaCy pipeline: ``pipeline_dir`` (or a blank tokenizer of the first model's language and
    tokenizer settings) plus one component per model, the one its task names (``tagpipe.tasks``);
    without either, the embedded default model. Components keep their own forward-pass batch size:
    each receives a whole annotate batch and sorts it by length itself."""
    import spacy

    from tagpipe.defaults import default_model_path, model_path
    from tagpipe.model_folder import read_model_config
    from tagpipe.tasks import add_model_pipe, blank_nlp

    paths = [model_path(m) for m in models] or ([] if pipeline_dir else [default_model_path()])
    configs = [read_model_config(p) for p in paths]
    if pipeline_dir is not None:
        try:
            nlp = spacy.load(pipeline_dir)
        except OSError as exc:
            raise TagpipeError(f"{pipeline_dir}: cannot load the spaCy pipeline: {exc}") from None
    else:
        nlp = blank_nlp(configs[0])
    for index, (path, config) in enumerate(zip(paths, configs, strict=True)):
        first = index == 0 and pipeline_dir is None
        add_model_pipe(nlp, path, config, index=index, device=device, scores=scores, precision=precision,
                       existing_ents=existing_ents or ("overwrite" if first else "merge"))
    return nlp


class Annotator:
    """Annotates one batch of items and encodes each doc for every output (runs in workers too)."""

    def __init__(self, nlp: Any, encoders: tuple[Callable[[Any, Item], bytes], ...], batch_size: int) -> None:
        self.nlp = nlp
        self.encoders = encoders
        self.batch_size = batch_size

    def make_doc(self, item: Item) -> Any:
        from spacy.tokens import Doc

        content = item.content
        if isinstance(content, str):
            return content
        if isinstance(content, bytes):
            return Doc(self.nlp.vocab).from_bytes(content)
        words, spaces = content
        return Doc(self.nlp.vocab, words=words, spaces=spaces)

    def __call__(self, items: list[Item]) -> tuple[list[tuple[bytes, ...]], int]:
        """Encoded docs, in order, and their total number of tokens."""
        docs = self.nlp.pipe((self.make_doc(i) for i in items), batch_size=self.batch_size)
        payloads, tokens = [], 0
        for doc, item in zip(docs, items, strict=True):
            payloads.append(tuple(encode(doc, item) for encode in self.encoders))
            tokens += len(doc)
        trim_freed_memory()  # peak RSS stays one batch's, however long the input (pipeline/memory.py)
        return payloads, tokens


def run(settings: AnnotateSettings, *, warn: Callable[[str], None], progress: bool = False) -> Stats:
    """Annotate ``settings.inputs`` into the outputs; returns the counts for the summary. Everything
    that can be refused (options, outputs, inputs, a held lock, a resume sidecar) is refused before
    the model is loaded."""
    if settings.batch_size < 1 or settings.n_process < 1 or settings.threads < 1:
        raise TagpipeError("--batch-size, --n-process and --threads must be at least 1")
    outputs: list[Output] = [make_output(settings.output, settings.output_format)]
    if settings.html is not None:
        outputs.append(HtmlOutput(settings.html, settings.html_page_size))
    if settings.resume and not all(o.resumable for o in outputs):
        raise TagpipeError("--resume needs --output FILE (stdout cannot be continued)")
    check_targets(outputs)
    counts = Counts()
    files = input_files(settings.inputs, settings.input_format, counts)
    check_not_inputs(outputs, [path for path, _, _ in files])
    with locked(outputs):
        checkpoints = Checkpoints(outputs[0], outputs, settings.fingerprint(), settings.checkpoint_seconds)
        state = checkpoints.load() if settings.resume else None
        for path in counts.ignored_files:
            warn(f"warning: ignored {path}: {counts.reasons.get(path, 'not an input')}")
        return _run(settings, outputs, files, counts, checkpoints, state, warn, progress)


def _run(settings: AnnotateSettings, outputs: list[Output], files: list[tuple[str, str, str | None]], counts: Counts,
         checkpoints: Checkpoints, state: ResumeState | None, warn: Callable[[str], None], progress: bool) -> Stats:
    import torch

    torch.set_num_threads(settings.threads)
    nlp = build_nlp(settings.models, settings.pipeline, device=settings.device, existing_ents=settings.existing_ents,
                    scores=settings.scores, precision=settings.precision)
    annotator = Annotator(nlp, tuple(o.encoder for o in outputs), settings.batch_size)
    reporter = Reporter(settings.strict, warn)
    stats = Stats(docs=state.docs if state else 0, tokens=state.tokens if state else 0,
                  resumed_from=state.docs if state else 0)
    items = _guard_length(_all_items(files, reporter, counts), nlp.max_length, reporter)
    if state is None:
        checkpoints.remove()  # a stale sidecar must not describe the fresh partial files
    else:
        _skip(items, state.docs, reporter, checkpoints)
        checkpoints.verify(state)  # before a partial file is touched: a refused run leaves them as they were
        if state.finished:
            return _complete(outputs, checkpoints, stats, reporter, counts)
    for i, output in enumerate(outputs):
        output.open(state.offsets[i] if state else None)

    bar = _progress_bar(stats.docs) if progress else None
    if bar is not None:
        warn = reporter.warn = _above(bar, warn)  # a warning printed mid-bar would be glued to the bar's line
    batches = _batches(items, settings.batch_size)
    if checkpoints.enabled:
        batches = checkpoints.consumed.track(batches)
    started = time.perf_counter()
    try:
        for payloads, tokens in _annotated(annotator, batches, settings):
            for row in payloads:
                for output, payload in zip(outputs, row, strict=True):
                    output.write(payload)
            kill_point("annotate-write")
            stats.docs += len(payloads)
            stats.tokens += tokens
            stats.new_tokens += tokens
            checkpoints.maybe_save(ResumeState(stats.docs, stats.tokens))
            if bar is not None:
                bar.update(len(payloads))
                bar.set_postfix_str(f"{stats.new_tokens / (time.perf_counter() - started):.0f} tokens/s",
                                    refresh=False)
    except BaseException:
        _keep_partial(checkpoints, outputs, stats, warn)
        raise
    finally:
        if bar is not None:
            bar.close()
    for output in outputs:
        output.sync()
    checkpoints.save(ResumeState(stats.docs, stats.tokens, finished=True))  # all on disk: only renaming is left
    for output in outputs:
        output.close()
    _complete(outputs, checkpoints, stats, reporter, counts)
    stats.seconds = time.perf_counter() - started
    return stats


def _complete(outputs: list[Output], checkpoints: Checkpoints, stats: Stats, reporter: Reporter,
              counts: Counts) -> Stats:
    """Rename the complete partial files into place (those a killed run had not renamed yet), then
    drop the sidecar."""
    for output in outputs:
        if not output.resumable:
            continue  # stdout: written as it went
        if not output.partial.exists():
            if not output.target.exists():
                raise TagpipeError(f"cannot resume: both {output.partial} and {output.target} are gone; run "
                                   "again without --resume")
            continue  # renamed before the kill
        output.finalize()
        kill_point("annotate-finalize")
    checkpoints.remove()
    stats.skipped, stats.blank, stats.ignored_files = reporter.skipped, counts.blank, counts.ignored_files
    return stats


def _keep_partial(checkpoints: Checkpoints, outputs: list[Output], stats: Stats, warn: Callable[[str], None]) -> None:
    """After an error or Ctrl-C: record what is done so ``--resume`` continues from there."""
    if stats.docs == 0:
        for output in outputs:
            output.discard()
        checkpoints.remove()
        return
    try:
        checkpoints.save(ResumeState(stats.docs, stats.tokens))
        if checkpoints.enabled:
            warn(f"stopped after {stats.docs} documents; the partial output is kept: rerun with --resume "
                 "to continue")
    finally:
        for output in outputs:
            output.close()


def _all_items(files: list[tuple[str, str, str | None]], reporter: Reporter, counts: Counts) -> Iterator[Item]:
    for path, fmt, label in files:
        yield from read_items(path, fmt, reporter, counts, label)


def _guard_length(items: Iterable[Item], limit: int, on_error: Callable[[CorpusError], object]) -> Iterator[Item]:
    """Texts longer than spaCy's ``nlp.max_length`` are bad lines, not a crash mid-run."""
    for item in items:
        if item.length > limit:
            on_error(CorpusError(item.source, item.line, f"document of {item.length} characters is longer than "
                                                         f"the tokenizer's limit (nlp.max_length = {limit})"))
            continue
        yield item


def _skip(items: Iterator[Item], done: int, reporter: Reporter, checkpoints: Checkpoints) -> None:
    """Read the documents a resumed run has already written (into the digest that
    ``checkpoints.verify`` checks), without re-reporting bad lines."""
    reporter.silent = True
    for _ in range(done):
        item = next(items, None)
        if item is None:
            raise TagpipeError(f"cannot resume: the input has fewer than the {done} documents already written; "
                               "run again without --resume to start over")
        checkpoints.consumed.add(item)
    reporter.silent = False


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _annotated(annotator: Annotator, batches: Iterator[list[Item]], settings: AnnotateSettings):
    if settings.engine == "ray":
        from tagpipe.annotating.ray_engine import annotate

        return annotate(annotator, batches, settings)
    if settings.n_process == 1:
        return map(annotator, batches)
    from tagpipe.annotating.workers import parallel

    return parallel(annotator, batches, settings)


def _progress_bar(initial: int):
    import sys

    from tqdm import tqdm

    return tqdm(unit="doc", desc="annotate", initial=initial, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def _above(bar: Any, warn: Callable[[str], None]) -> Callable[[str], None]:
    """``warn`` printed above the progress bar, which is redrawn below it."""

    def write(message: str) -> None:
        with bar.external_write_mode():
            warn(message)

    return write
