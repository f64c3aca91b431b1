"""``--engine ray``: batches annotated by a pool of Ray actors (Ray Data), results kept in order.

A sibling of :mod:`tagpipe.annotating.workers`: ``annotate(annotator, batches, settings)`` yields
``(payloads, tokens)`` per batch like ``workers.parallel``, so ``tagpipe.annotating.engine.run`` keeps
the outputs, the resume sidecar, the progress bar and the summary unchanged.

The design, and why:

- **Reading stays on the driver.** The driver's own readers produce the batches (the same fixed
  batches as the local engine, after the ``--resume`` skip), so bad lines are reported by the
  driver's ``Reporter`` as ``path:line: reason``, ``--strict`` stops where it does locally,
  stdin works, and the input files need not be visible to the cluster. A feeder thread pickles
  each batch into a Ray queue actor; the dataset's single read task (a custom ``Datasource``,
  scheduled on the driver's node) is a generator that yields what the queue holds, one row per
  batch. Reading costs little next to annotation, so one reader keeps a pool busy.
- **One row per batch.** Ray merges the small blocks a read task yields into blocks of up to
  ``target_max_block_size`` (128 MB), which would hold a whole corpus back until it was read; the
  dataset's context sets it to one byte, so each one-row block moves on at once, and
  ``map_batches(batch_size=1)`` hands each actor exactly one of our batches: the same documents
  as a local batch, hence byte-identical output.
- **The model moves once.** The pickled ``Annotator`` (spaCy pipeline with the weights) is
  ``ray.put`` once; each actor fetches it in ``__init__`` (one transfer per node, then shared
  memory) and sets ``--threads`` torch threads. With ``--gpus-per-worker`` it is pickled with
  ``device="cuda"``, so each actor loads it onto the GPU Ray gave it.
- **Memory stays flat.** At most ``WINDOW_PER_WORKER x workers`` batches are between the reader
  and the writer (a semaphore the writer releases), whatever Ray's own buffers would allow.
- **Order.** ``preserve_order`` unless ``--unordered``, where batches are written as they finish
  (JSONL only: its records carry the ``id``, and ``file`` with several inputs).
- **Never outside.** Usage statistics are off (``RAY_USAGE_STATS_ENABLED=0``, set before Ray is
  imported); a local instance starts without a dashboard (``--ray-dashboard``: on 127.0.0.1),
  with Ray's token authentication, and is shut down at the end, after an error or Ctrl-C too,
  so the partial output and sidecar stay valid for ``--resume``. A failed worker is not restarted
  (``max_restarts=0``): the run stops and ``--resume`` continues it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from typing import Any

from tagpipe.errors import TagpipeError

INSTALL_HINT = "pip install 'tagpipe[distributed]'"
WINDOW_PER_WORKER = 4  # batches between the reader and the writer, per worker


def check(settings: Any) -> None:
    """Refuse option combinations the Ray engine cannot honour, and a missing Ray, before any
    model is loaded (the CLI calls this first; :func:`annotate` calls it again)."""
    if settings.device != "cpu":
        raise TagpipeError("--engine ray: give GPUs to the workers with --gpus-per-worker (--device is for the "
                           "local engine; the driver only loads the model to ship it)")
    if settings.n_process != 1:
        raise TagpipeError("--engine ray: use --num-workers (--n-process is for the local engine)")
    if settings.num_workers is not None and settings.num_workers < 1:
        raise TagpipeError("--num-workers must be at least 1")
    if settings.gpus_per_worker < 0:
        raise TagpipeError("--gpus-per-worker cannot be negative")
    if settings.unordered:
        if settings.resume:
            raise TagpipeError("--unordered output cannot be resumed (it is not a prefix of the input); "
                               "drop --unordered to use --resume")
        fmt = settings.output_format or ("jsonl" if settings.output == "-" else
                                         os.path.splitext(settings.output)[1].lower().lstrip("."))
        if fmt not in ("jsonl", "json"):
            raise TagpipeError("--unordered needs a JSONL output, whose records carry the document id (CoNLL and "
                               ".spacy outputs have none)")
    import_ray(local=settings.address is None)
    if settings.address is not None:
        _reachable(settings.address)


def import_ray(local: bool = False) -> Any:
    """``ray`` with usage statistics off, or one line saying how to install it."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # read by Ray when it starts: never report home
    if local and "ray" not in sys.modules:
        # Ray's default for a local instance, set explicitly to spare its warning; read when Ray is
        # imported (joining a cluster, its own setting applies)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        # Ray starts its workers at nice 15 (to keep a shared head node responsive); a local
        # instance exists for this command alone and its workers are the job: under any other
        # load on the machine, niceness 15 made them several times slower than the local engine
        os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra (pyarrow, pandas) comes with it
    except ImportError as exc:
        raise TagpipeError(f"--engine ray needs Ray Data ({exc}): {INSTALL_HINT}") from None
    return ray


def annotate(annotator: Any, batches: Iterator[list], settings: Any) -> Iterator[tuple[list[tuple[bytes, ...]], int]]:
    """``annotator(batch)`` for each batch, computed by a pool of Ray actors, in input order
    (as they finish with ``settings.unordered``)."""
    check(settings)
    ray = import_ray(local=settings.address is None)
    started = _connect(ray, settings)
    feeder: _Feeder | None = None
    results = None
    try:
        workers = settings.num_workers or _default_workers(ray, settings)
        feeder = _Feeder(ray, batches, WINDOW_PER_WORKER * workers)
        dataset = _dataset(ray, feeder.queue, annotator, settings, workers)
        feeder.start()
        with _quiet_ray_data():
            results = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
            for table in results:
                for row in table.to_pylist():
                    feeder.window.release()
                    yield pickle.loads(row["payloads"]), row["tokens"]
        feeder.raise_failure()  # e.g. a --strict bad line, after the batches before it were written
    finally:
        if results is not None:
            results.close()  # stops the streaming executor (and its actors) now, not at garbage collection
        if feeder is not None:
            feeder.stop()
        if started:
            ray.shutdown()


# -- the driver side --------------------------------------------------------------------------
def _connect(ray: Any, settings: Any) -> bool:
    """Join ``--address`` or start a local instance; True when this run started it (and ends it)."""
    if ray.is_initialized():  # called from a program that already runs Ray: use it as it is
        return False
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if settings.address is None:
        workers = settings.num_workers
        options.update(num_cpus=workers * settings.threads if workers else None,
                       include_dashboard=settings.ray_dashboard, dashboard_host="127.0.0.1")
    try:
        ray.init(address=settings.address or "local", **options)  # "local": never a cluster found by chance
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {settings.address}" if settings.address else "a local Ray instance"
        raise TagpipeError(f"cannot start or join {where}: {exc}") from None
    return settings.address is None


def _reachable(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens on (Ray would retry it for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise TagpipeError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _default_workers(ray: Any, settings: Any) -> int:
    """One worker per GPU share with ``--gpus-per-worker``, else one per ``--threads`` CPUs."""
    resources = ray.cluster_resources()
    if settings.gpus_per_worker > 0:
        workers = int(resources.get("GPU", 0) // settings.gpus_per_worker)
        if workers < 1:
            raise TagpipeError(f"--gpus-per-worker {settings.gpus_per_worker}: the Ray cluster has "
                               f"{resources.get('GPU', 0):g} GPUs")
        return workers
    return max(1, int(resources.get("CPU", 1) // settings.threads))


class _Feeder:
    """A thread that moves the driver's batches into a Ray queue, at most ``window`` ahead of the writer."""

    def __init__(self, ray: Any, batches: Iterator[list], window: int) -> None:
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.window = threading.Semaphore(window)
        self._batches = batches
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tagpipe-ray-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import pyarrow as pa

        try:
            for batch in self._batches:
                self.window.acquire()
                if self._stopping.is_set():
                    return
                self.queue.put(pa.table({"items": [pickle.dumps(batch, protocol=5)]}))
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread, which raises it
            self._failure = exc
        if not self._stopping.is_set():
            self.queue.put(None)  # the end of the input: the read task returns

    def raise_failure(self) -> None:
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        self._stopping.set()
        self.window.release()  # a feeder waiting for room wakes up and sees the flag
        try:
            self.queue.shutdown()
        except Exception:  # noqa: BLE001 - Ray may already be gone (Ctrl-C reaches its processes too)
            pass
        self._thread.join(timeout=5)


def _dataset(ray: Any, queue: Any, annotator: Any, settings: Any, workers: int) -> Any:
    """Read task -> ``map_batches`` over an actor pool; each row is one pickled batch."""
    import warnings

    from ray.data import ActorPoolStrategy

    driver_node = ray.get_runtime_context().get_node_id()
    shipped = _ship(ray, annotator, settings.gpus_per_worker)
    with warnings.catch_warnings():
        # Ray's own DataContext() warns about its deprecated fields, and max_restarts has no named
        # parameter yet (Ray warns about the keyword form): nothing a user can act on
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.read_datasource(_feed_datasource(queue), override_num_blocks=1, num_cpus=0,
                                           label_selector={"ray.io/node-id": driver_node})
        context = dataset.context  # this dataset's own copy, inherited by the mapped one
        context.target_max_block_size = 1  # every one-row block moves on at once (see the module docstring)
        context.execution_options.preserve_order = not settings.unordered
        context.enable_progress_bars = False  # ours is the progress bar
        context.print_on_execution_start = False
        return dataset.map_batches(
            _Worker, fn_constructor_args=([shipped], settings.threads), batch_size=1, batch_format="pyarrow",
            compute=ActorPoolStrategy(size=workers), num_cpus=settings.threads,
            num_gpus=settings.gpus_per_worker or None, max_restarts=0)


def _ship(ray: Any, annotator: Any, gpus: float) -> Any:
    """``ray.put`` the annotator once; with GPUs, pickled so that each worker loads it onto its own."""
    pipes = [pipe for _, pipe in annotator.nlp.pipeline if hasattr(pipe, "device")] if gpus else []
    devices = [pipe.device for pipe in pipes]
    try:
        for pipe in pipes:
            pipe.device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES per actor: "cuda" is that actor's GPU
        return ray.put(annotator)  # serialised here, so the driver's own pipeline is untouched
    finally:
        for pipe, device in zip(pipes, devices, strict=True):
            pipe.device = device


def _feed_datasource(queue: Any) -> Any:
    """A ``Datasource`` with one read task that yields the queue's blocks until ``None``."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class FeedDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ReadTask(functools.partial(_read, queue), metadata)]

        def get_name(self) -> str:
            return "TagpipeFeed"

    return FeedDatasource()


def _read(queue: Any) -> Iterator[Any]:
    while (block := queue.get()) is not None:
        yield block


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's console handler on errors only while we run (its log file keeps everything), and
    without its warning that the pool "received 1 input": our one read task streams one block per
    batch, and every actor gets batches (the warning counts read tasks, not blocks)."""
    import warnings

    handlers = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the executor's thread warns too: filters are process-wide
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
            yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


# -- the worker side --------------------------------------------------------------------------
class _Worker:
    """One Ray actor: loads the pipeline once, then annotates one batch per row."""

    def __init__(self, shipped: list, threads: int) -> None:
        import ray
        import torch

        import tagpipe.spacy_bridge.factories  # noqa: F401 - registers the Span/Token extensions the components set

        torch.set_num_threads(threads)
        self.annotator = ray.get(shipped[0])

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        payloads, tokens = [], []
        for blob in table.column("items").to_pylist():
            done, count = self.annotator(pickle.loads(blob))
            payloads.append(pickle.dumps(done, protocol=5))
            tokens.append(count)
        return pa.table({"payloads": pa.array(payloads, pa.binary()), "tokens": pa.array(tokens, pa.int64())})
