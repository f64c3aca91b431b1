"""``tagpipe annotate``: run one or more models over a corpus, streaming (the engine is
``tagpipe.annotating.engine``; formats are ``tagpipe.annotating.sources`` and ``tagpipe.annotating.outputs``)."""

from __future__ import annotations

import click

from tagpipe.commands.options import device_option, quiet_option, threads_option
from tagpipe.names import EXISTING_ENTS


@click.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--model", "-m", "models", multiple=True,
              help="Model folder or embedded model name (en, zh); repeat to chain models [default: en].")
@click.option("--pipeline", "pipeline_dir", default=None, help="A saved spaCy pipeline to run before the models.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Output file: .jsonl, .conll or .spacy (written to a partial file, renamed when complete).")
@click.option("--output-format", type=click.Choice(["jsonl", "conll", "spacy"]), default=None,
              help="Output format when the extension does not say (e.g. CoNLL on stdout).")
@click.option("--format", "input_format", default=None,
              help="Input format: text, jsonl, conll, conllu, spacy, ... (default: from each extension; text for -).")
@click.option("--html", default=None, help="Also write displaCy entity pages: a FILE.html or a folder.")
@click.option("--html-page-size", type=int, default=1000, show_default=True, help="Documents per HTML page.")
@click.option("--batch-size", type=int, default=1024, show_default=True,
              help="Documents read, annotated and written together (a model sorts them by length into its own "
                   "forward passes).")
@click.option("--n-process", type=int, default=1, show_default=True, help="Worker processes.")
@threads_option
@device_option
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="bf16/fp16: taggers' encoders under autocast (bf16 on CPUs with AVX512-BF16).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process (or --n-process workers); ray: a pool of Ray actors (Ray Data), "
                   "needs pip install 'tagpipe[distributed]'.")
@click.option("--address", default=None, help="Ray: the cluster to join (e.g. auto, or HOST:6379); default: start "
                                               "a local Ray instance.")
@click.option("--num-workers", type=int, default=None,
              help="Ray: worker actors, each loading the model once (default: one per --threads CPUs).")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="Ray: GPUs per worker (0.5: two workers share one); the model runs on them.")
@click.option("--unordered", is_flag=True, help="Ray: write batches as they finish (JSONL records keyed by "
                                                "id) instead of in input order.")
@click.option("--ray-dashboard", is_flag=True, help="Ray: start a local instance's dashboard (on 127.0.0.1).")
@click.option("--existing-ents", type=click.Choice(EXISTING_ENTS), default=None,
              help="What a model does with entities already set (default: the first model overwrites, "
                   "later ones and those after --pipeline merge).")
@click.option("--scores/--no-scores", default=True, show_default=True,
              help="Entity confidences (CRF marginals by forward-backward); --no-scores is faster.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its partial output.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input line (path:line: reason) instead of "
                                             "skipping it.")
@quiet_option
@click.option("--checkpoint-seconds", type=float, default=1.0, hidden=True)
def annotate(inputs: tuple[str, ...], models: tuple[str, ...], pipeline_dir: str | None, output: str,
             output_format: str | None, input_format: str | None, html: str | None, html_page_size: int,
             batch_size: int, n_process: int, threads: int | None, device: str, existing_ents: str | None, scores: bool,
             resume: bool, strict: bool, quiet: bool, checkpoint_seconds: float, engine: str, address: str | None,
             num_workers: int | None, gpus_per_worker: float, unordered: bool, ray_dashboard: bool,
             precision: str) -> None:
    """Annotate INPUT files or folders ('-' for stdin): plain text (one document per line), JSONL
    (a "text" or "tokens" field; other fields are carried through), CoNLL, CoNLL-U or spaCy .spacy.

    Writes one JSON record per document, {"id", "text", "tokens", "entities"} (and "tags" for a
    tagging model), or CoNLL / .spacy. Bad lines are skipped with a warning naming them and counted
    in the summary (--strict: stop). Outputs are checked and locked for the run before the model
    loads; --resume refuses an input that changed (docs/annotate.md, "Guarantees"). --quiet also
    leaves out the summary. Without --threads, torch's own thread count is shared out among the
    --n-process workers (a Ray worker takes one); --device auto is the GPU, with --engine ray the CPU
    (Ray's GPUs come with --gpus-per-worker).
    """
    from tagpipe.annotating.engine import AnnotateSettings, run
    from tagpipe.errors import TagpipeError

    device, threads = _place(device, threads, n_process, engine)

    settings = AnnotateSettings(
        inputs=list(inputs), input_format=input_format, models=list(models), pipeline=pipeline_dir, output=output,
        output_format=output_format, html=html, html_page_size=html_page_size, batch_size=batch_size,
        n_process=n_process, device=device, threads=threads, existing_ents=existing_ents, scores=scores,
        strict=strict, resume=resume, checkpoint_seconds=checkpoint_seconds, engine=engine, address=address,
        num_workers=num_workers, gpus_per_worker=gpus_per_worker, unordered=unordered, ray_dashboard=ray_dashboard,
        precision=precision)
    if engine == "ray":
        from tagpipe.annotating.ray_engine import check

        check(settings)  # a missing Ray or a refused option fails here, before the model is loaded
    elif address or num_workers is not None or gpus_per_worker or unordered or ray_dashboard:
        raise TagpipeError("--address, --num-workers, --gpus-per-worker, --unordered and --ray-dashboard need "
                           "--engine ray")
    stats = run(settings, warn=lambda message: click.echo(message, err=True), progress=not quiet)
    if not quiet:
        click.echo(stats.summary(), err=True)


def _place(device: str, threads: int | None, n_process: int, engine: str) -> tuple[str, int]:
    """``--device`` resolved (the engines pick fork or spawn, Ray or not, by ``cpu``) and ``--threads``'
    default: torch's own count, split among the ``--n-process`` workers; 1 per Ray worker (whose device
    ``ray_engine.check`` refuses unless it is the CPU)."""
    import torch

    from tagpipe.devices import resolve_device

    if engine == "ray":  # its check refuses any other device: Ray's GPUs come with --gpus-per-worker
        return ("cpu" if device == "auto" else device), (1 if threads is None else threads)
    device = str(resolve_device(device))
    if threads is None:
        threads = max(1, torch.get_num_threads() // max(n_process, 1))
    return device, threads
