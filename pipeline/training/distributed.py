"""Data-parallel training under ``torchrun``: the process group, each rank's share of a batch, and
the ``DistributedDataParallel`` wrapper that averages gradients.

``torchrun --nproc-per-node N cli.py train ...`` starts N trainers; each finds its place in the
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` variables torchrun sets. Every rank reads the whole
training corpus, builds the same model (checked by :func:`verify_same_model`) and the same
length-bucketed batch list from the same seed, and takes its contiguous slice of each global batch
(:func:`shard`). The loss goes through :func:`data_parallel` (PyTorch's DistributedDataParallel,
which all-reduces gradients bucket by bucket while the backward pass runs); each rank weights its
loss by ``N`` times its share of the global batch, so DDP's average over ranks is the gradient of
the mean loss over the global batch: every rank takes the step one process would take on the whole
batch. Rank 0 alone evaluates, logs and writes the model (see ``docs/scaling.md``).

Only ``torch.distributed`` and DDP are used, imported lazily; outside torchrun nothing here does
anything. Variables inherited from elsewhere (a shell that exported ``WORLD_SIZE`` and ``MASTER_PORT``)
start nothing: a process group is joined only when torchrun launched the process (it sets
``TORCHELASTIC_RUN_ID`` beside ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``) or ``TAGPIPE_DISTRIBUTED=1``
asks for it (another launcher: ``srun``, ``mpirun``); otherwise one warning line says they are
ignored. Under torchrun the ranks connect to the store torchrun's agent hosts; when rank 0 hosts it, it
listens on ``MASTER_ADDR`` only, never on every interface.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tagpipe.errors import TagpipeError

#: ``1``: join a process group from WORLD_SIZE / RANK / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set by a
#: launcher other than torchrun (without it, only torchrun's variables start one)
OPT_IN_ENV = "TAGPIPE_DISTRIBUTED"
#: what torchrun sets in every process it launches, beside WORLD_SIZE / RANK / LOCAL_RANK
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: a folder: every rank appends one JSON line per optimizer step (global loss, parameter digest) to
#: ``rank{R}.jsonl`` and saves its parameters after the first step as ``rank{R}-step1.pt`` (tests)
TRACE_ENV = "TAGPIPE_TRACE_STEPS"


@dataclass(frozen=True)
class Context:
    """This process's place in the job; ``world_size == 1`` is an ordinary single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # the trainer created the process group, so it destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()
_warned: set[str] = set()  # the inherited launch variables already reported


def launched() -> bool:
    """Whether this process is one rank of several: started by torchrun (``TORCHELASTIC_RUN_ID`` set
    beside ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``) or with ``TAGPIPE_DISTRIBUTED=1``, and
    ``WORLD_SIZE`` above 1. Variables merely inherited from the environment do not count."""
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if os.environ.get(OPT_IN_ENV, "") not in ("", "0"):
        return True
    return bool(os.environ.get(TORCHRUN_ENV)) and all(os.environ.get(v) for v in ("RANK", "LOCAL_RANK"))


def is_main() -> bool:
    """Whether this process should log and write files: rank 0 under torchrun, or a plain run (one that
    inherited WORLD_SIZE above 1 and RANK without being launched is a plain run: :func:`setup`)."""
    return _env_int("RANK", 0) == 0 or (_env_int("WORLD_SIZE", 1) > 1 and not launched())


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun (or with ``TAGPIPE_DISTRIBUTED=1``) with more
    than one process; inherited ``WORLD_SIZE`` & co. outside torchrun get one warning line and a
    single-process run.

    Returns the context and the device this rank trains on: ``cuda:LOCAL_RANK`` when ``device``
    is a CUDA device (backend nccl), the CPU otherwise (backend gloo)."""
    world_size, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return SINGLE, device
    if not launched():
        stray = ", ".join(f"{v}={os.environ[v]}" for v in LAUNCH_VARIABLES if os.environ.get(v))
        if stray not in _warned:  # once per process (compare trains many cells)
            _warned.add(stray)
            print(f"warning: {stray} ignored: not launched by torchrun ({TORCHRUN_ENV} unset); training in one "
                  f"process ({OPT_IN_ENV}=1 joins a process group)", file=sys.stderr, flush=True)
        return SINGLE, device
    if not 0 <= rank < world_size:
        raise TagpipeError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    import torch.distributed as dist

    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TagpipeError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise TagpipeError(f"WORLD_SIZE={world_size} but {' and '.join(missing)} unset: start with torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            dist.init_process_group(backend)  # env://: torchrun's agent hosts the store, this rank connects
        else:
            dist.init_process_group(backend, store=rendezvous_store(rank, world_size), rank=rank,
                                    world_size=world_size)
    elif dist.get_world_size() != world_size:
        raise TagpipeError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says {world_size}")
    return Context(world_size, rank, local_rank, owns), device


def rendezvous_store(rank: int, world_size: int, timeout: datetime.timedelta = datetime.timedelta(minutes=10)):
    """The TCP store of the process group at ``MASTER_ADDR:MASTER_PORT``: rank 0 hosts it, listening on
    that address alone (torch's own rendezvous listens on every interface), the others connect."""
    from torch.distributed import TCPStore

    host, port = os.environ["MASTER_ADDR"], _env_int("MASTER_PORT", 0)
    if rank != 0:
        return TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    listener = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen()
    except OSError as exc:
        if listener is not None:
            listener.close()
        raise TagpipeError(f"MASTER_ADDR={host} MASTER_PORT={port}: cannot listen there ({exc.strerror or exc})"
                           ) from None
    return TCPStore(host, port, world_size, is_master=True, timeout=timeout, master_listen_fd=listener.detach())


def teardown(context: Context) -> None:
    """Wait for every rank, then leave the process group (when :func:`setup` made it)."""
    if not context.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        if context.owns_group:
            dist.destroy_process_group()


def exit_launched_process() -> None:
    """Under torchrun, leave the process without interpreter finalization, after flushing.

    Gloo's C++ worker threads can abort the process (SIGABRT, "terminate called without an active
    exception") while Python tears itself down, even after ``destroy_process_group``
    (pytorch/pytorch#179291); that turns a finished run into a failed rank. By now the model and
    checkpoint are written and every rank has passed the final barrier."""
    if launched():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous part of a global batch: ``world_size`` parts whose sizes differ by
    at most one (the first ones get the extra sentences), together the whole batch in order."""
    size, extra = divmod(len(batch), world_size)
    start = rank * size + min(rank, extra)
    return list(batch[start : start + size + (1 if rank < extra else 0)])


class TrainingLoss(torch.nn.Module):
    """``forward(features, tags)`` is ``tagger.loss(features, tags)``: the forward DDP wraps.

    DDP arms its gradient hooks in ``forward`` and a tagger's loss is a method, so the training
    loss runs through this module; the tagger itself stays unwrapped for evaluation and saving
    (parameter names and saved files are those of one process)."""

    def __init__(self, tagger: torch.nn.Module) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, features: dict[str, torch.Tensor], tags: torch.Tensor) -> torch.Tensor:
        return self.tagger.loss(features, tags)


def data_parallel(tagger: torch.nn.Module, context: Context, device: torch.device) -> torch.nn.Module:
    """The module the training loop takes its loss from: :class:`TrainingLoss` in one process,
    wrapped in ``DistributedDataParallel`` (default 25 MB buckets) under torchrun.

    DDP *averages* gradients over ranks, so a rank scales its loss by ``world_size``.
    ``find_unused_parameters``: a parameter no rank reached in a step (a plugin's optional weights,
    a transformer that saw only empty sentences) keeps ``grad is None``, so the optimizer skips it
    as in one process (no AdamW weight decay, no momentum), and one that only some ranks reached
    gets the same average on every rank (zero from the others); without it such a step would hang
    or fail. The builtin encoders and decoders reach every parameter, so DDP warns once per rank
    that it found none unused; the price is a walk over the autograd graph per step. Gradient
    checkpointing must be non-reentrant (``bert``'s is)."""
    module = TrainingLoss(tagger)
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def no_sync(module: torch.nn.Module) -> AbstractContextManager:
    """Around the forward and backward of every pass of a step but the last: gradients only
    accumulate locally, the last pass all-reduces them (nothing to do outside torchrun)."""
    return module.no_sync() if hasattr(module, "no_sync") else nullcontext()


def all_reduce_sum(value: float, device: torch.device) -> float:
    """The sum of a number over all ranks."""
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item()


def broadcast(value: Any, context: Context) -> Any:
    """Rank 0's value (any picklable object) on every rank."""
    if not context.enabled:
        return value
    import torch.distributed as dist

    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, context: Context) -> list[Any]:
    """Every rank's value (any picklable object), in rank order, on every rank."""
    if not context.enabled:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def model_digest(model: Any) -> str:
    """SHA-256 of a tagger's configuration, encoder assets (vocabularies) and state dict."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config().items() if k != "meta"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with tempfile.TemporaryDirectory(prefix="tagpipe-digest-") as folder:
        model.encoder.save_assets(Path(folder))
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    digest.update(parameter_digest(model).encode())
    return digest.hexdigest()


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict's names and exact bytes: equal digests, identical parameters."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_same_model(model: Any, context: Context) -> None:
    """Fail on every rank unless all ranks built the same model (same data, settings and seed)."""
    if not context.enabled:
        return
    digests = gather(model_digest(model), context)
    differing = [r for r, d in enumerate(digests) if d != digests[0]]
    if differing:
        raise TagpipeError(f"ranks {differing} built a model different from rank 0's (vocabulary, labels or "
                           "initial weights): every rank needs the same --train file, settings and --seed")


class StepTrace:
    """Per-step record of one rank (``TAGPIPE_TRACE_STEPS``), to check that ranks stay identical."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.folder = folder
        self.rank = rank
        self.steps = 0
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{rank}.jsonl").write_text("")

    @classmethod
    def from_env(cls, context: Context) -> StepTrace | None:
        folder = os.environ.get(TRACE_ENV)
        return cls(Path(folder), context.rank) if folder else None

    def step(self, model: torch.nn.Module, loss: float) -> None:
        self.steps += 1
        record = {"step": self.steps, "loss": loss, "digest": parameter_digest(model)}
        with open(self.folder / f"rank{self.rank}.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")
        if self.steps == 1:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            torch.save(state, self.folder / f"rank{self.rank}-step1.pt")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise TagpipeError(f"{name}={value!r} is not an integer") from None
