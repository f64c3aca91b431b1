"""The training loop: length-bucketed batches, dev-F1 model selection, checkpoints, resume.

Layout of the output folder: the folder itself is always the best model so far (every file
replaced atomically, so it stays loadable whatever happens), and ``checkpoint/`` holds the
last epoch's model plus ``trainer_state.pt`` (optimizer, schedule, RNG, history) and a manifest for
``--resume`` (``pipeline/training/checkpoints.py``: data only, swapped in whole, refused to another
run's settings or data). Nothing here imports spaCy, so training runs where only torch is installed.
Under ``torchrun`` the same loop trains data-parallel (``pipeline/training/distributed.py``): each rank
takes its slice of every global batch, the loss runs through ``DistributedDataParallel`` (which
all-reduces the gradients during the backward pass), and rank 0 alone evaluates, logs and writes
files.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from tagpipe.corpora.schemes import convert
from tagpipe.corpora.types import Sentence
from tagpipe.data import entity_types, labelled_sentences
from tagpipe.devices import resolve_device
from tagpipe.errors import TagpipeError
from tagpipe.evaluation import entity_scores, token_accuracy
from tagpipe.memory import return_freed_memory
from tagpipe.model import Tagger, span_labels, to_device
from tagpipe.training import checkpoints, distributed
from tagpipe.training.checkpoints import CHECKPOINT_DIR, kill_point
from tagpipe.training.checkpoints import STATE_FILE as STATE_FILE  # where it always was, for callers
from tagpipe.training.flooding import flooded
from tagpipe.training.lr_scaling import LrScaling
from tagpipe.training.optimizers import build_optimizer
from tagpipe.training.settings import TrainSettings, check_lengths


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Use torch's deterministic kernels while training, then restore the caller's choice.

    Some CPU backward kernels (accumulating gradients of indexed rows from several threads) add in an
    order that varies between runs, so without this a seeded run could differ from its twin in the
    4th decimal of the loss, and a resumed run from an uninterrupted one. The deterministic kernels
    cost no measurable time on our models (docs/training.md); uninitialised memory is not filled.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar lengths (less padding) in a shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] + rng.random() * 2, i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_tags(tag_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max((len(t) for t in tag_ids), default=0)
    return torch.tensor([list(t) + [-1] * (width - len(t)) for t in tag_ids], dtype=torch.long)



def warmup_then_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float,
                      final: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The rate rises linearly over the first ``warmup`` fraction of ``total_steps`` (Adam's early steps are
    noisy), then falls linearly to ``final`` times itself at the last step and stays there."""
    warmup_steps = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(final, 1.0 - (1.0 - final) * (step - warmup_steps) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Trains one tagger from :class:`TrainSettings`; ``run()`` returns the best dev score."""

    def __init__(self, settings: TrainSettings, *, resume: bool = False,
                 log: Callable[[str], None] = print, progress: bool = True) -> None:
        self.settings = settings
        self.resume = resume
        self.log = log
        self.progress = progress
        self.output = Path(settings.output)
        self._last_dev: dict[str, str] = {}
        self._metric = "F1" if settings.task == "ner" else "accuracy"
        self.device = resolve_device(settings.device)
        self.invalid_counts: dict[str, dict[str, int]] = {}  # corpus -> {"repaired": n, "dropped": n}
        self.dist = distributed.SINGLE  # set by run(): this process's rank under torchrun
        self.trace: distributed.StepTrace | None = None
        self.data: dict[str, Any] = {}  # set by run(): size and sha256 of the corpora, for the checkpoints

    # -- data ----------------------------------------------------------------------------
    def _read(self, path: str) -> list[Sentence]:
        s = self.settings
        counts: dict[str, int] = {}
        sentences = labelled_sentences(path, s.format, task=s.task, scheme=s.scheme, tag_column=s.tag_column,
                                       invalid=s.invalid_tags, counts=counts)
        for action in ("repaired", "dropped"):
            if counts.get(action):
                self.log(f"{path}: {counts[action]} sentences whose tags break {s.scheme.upper()} {action}")
        self.invalid_counts[str(path)] = counts
        check_lengths(sentences, s.max_sentence_length, path)
        return sentences

    def _internal_tags(self, sentence: Sentence) -> list[str]:
        return convert(sentence.tags, "iob2", "bioes") if self.settings.task == "ner" else list(sentence.tags)

    def score(self, model: Tagger, sentences: Sequence[Sentence]) -> dict[str, Any]:
        """Dev/test scores: entity P/R/F1 for NER, token accuracy (as ``f1`` too) for tagging."""
        predicted = model.tag([s.tokens for s in sentences], batch_size=128)
        gold = [s.tags for s in sentences]
        if self.settings.task == "ner":
            return entity_scores(gold, [convert(p, "bioes", "iob2") for p in predicted])
        scores = token_accuracy(gold, predicted)
        scores["f1"] = scores["accuracy"]
        return scores

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train; under torchrun every rank calls this and all return the same result."""
        self.settings.check_output()  # before anything is read or built
        self.dist, self.device = distributed.setup(self.device)
        if not self.dist.is_main:
            self.log, self.progress = (lambda _: None), False
        self.trace = distributed.StepTrace.from_env(self.dist)
        with deterministic_algorithms():
            result = self._run()
        distributed.teardown(self.dist)  # not after an error: torchrun stops the other ranks
        return result

    def _run(self) -> dict[str, Any]:
        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        if self.device.type == "cpu":
            return_freed_memory()  # activations live in host memory: keep RSS at what is alive (pipeline/memory.py)
        seed_everything(s.seed)
        self.data = checkpoints.data_fingerprints(s.train, s.dev)
        model, state, accepted = self._resume() if self.resume else (None, None, {})
        train = self._read(s.train)
        dev = self._read(s.dev) if s.dev else None
        train_tags = [self._internal_tags(x) for x in train]
        if state is not None:
            self.log(f"resuming from {self.output / CHECKPOINT_DIR} after epoch {state['epoch']}")
        else:
            if s.task == "ner":
                labels = span_labels(entity_types(train), "bioes")
            else:
                labels = sorted({t for x in train_tags for t in x})
            model = Tagger.build([x.tokens for x in train], labels, encoder=s.encoder, decoder=s.decoder,
                                 encoder_config=s.encoder_config, decoder_config=s.decoder_config, task=s.task,
                                 lang=s.lang, scheme="bioes" if s.task == "ner" else None).to(self.device)
        if self.dist.rank:  # a dropout stream of its own per rank; rank 0 keeps the single-process one
            torch.manual_seed(s.seed + 7919 * self.dist.rank)
        distributed.verify_same_model(model, self.dist)
        self._prepare(model)
        train_loss = distributed.data_parallel(model, self.dist, self.device)  # the model stays unwrapped
        unknown = {t for x in train_tags for t in x} - set(model.labels)
        if unknown:
            raise TagpipeError(f"training tags not in the model's label set: {sorted(unknown)[:10]}")
        tag_ids = [[model.label_ids[t] for t in x] for x in train_tags]
        step_size = s.batch_size * s.accumulate  # sentences per optimizer step
        batches_per_epoch = math.ceil(len(train) / step_size)
        scaling = LrScaling.of(s)  # --lr-scaling: the rates follow the global batch
        optimizer = self._optimizer(model, scaling)
        schedule = warmup_then_decay(optimizer, batches_per_epoch * s.epochs, s.warmup, s.lr_final)
        scaler = torch.amp.GradScaler(self.device.type, enabled=s.precision == "fp16")
        history: list[dict[str, Any]] = []
        best = {"f1": -math.inf, "epoch": 0}  # without --dev the score is -loss, which may be below -1
        top: list[tuple[float, dict[str, torch.Tensor]]] = []
        first_epoch = 1
        rng = random.Random(s.seed)
        if state is not None:
            history, best, top = checkpoints.restore(state, optimizer, schedule, scaler, rng, self.dist.rank,
                                                     self.dist.world_size)
            first_epoch = state["epoch"] + 1
        model.meta["settings"] = s.to_dict()
        model.meta["lr_scaling"] = scaling.record(s.lr, s.encoder_lr)
        if accepted:  # the settings of the epochs before the resume, as far as they differ
            self.log("--resume: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in accepted.items()))
            model.meta["resumed"] = [*model.meta.get("resumed", []), {"after_epoch": state["epoch"],
                                                                      "changed": accepted}]
        if any(self.invalid_counts.get(str(p)) for p in (s.train, s.dev) if p):
            model.meta["invalid_tags"] = {p: c for p, c in self.invalid_counts.items() if any(c.values())}
        ranks = f" x {self.dist.world_size} ranks" if self.dist.enabled else ""
        self.log(f"training {s.encoder} + {s.decoder} on {len(train)} sentences ({sum(map(len, train))} tokens), "
                 f"{len(model.labels)} tags, {sum(p.numel() for p in model.parameters()):,} parameters, "
                 f"device {self.device}{ranks}")
        if scaling.message(s.lr, s.encoder_lr):
            self.log(scaling.message(s.lr, s.encoder_lr))
        bad_epochs = sum(1 for h in history if h["epoch"] > best["epoch"])
        for epoch in range(first_epoch, s.epochs + 1):
            if bad_epochs >= s.patience:
                break
            started = time.perf_counter()
            loss = self._epoch(model, train_loss, train, tag_ids,
                               length_batches([len(x) for x in train], step_size, rng), optimizer, schedule, scaler,
                               epoch)
            seconds = time.perf_counter() - started
            torch_rngs = distributed.gather(torch.get_rng_state(), self.dist)
            if self.dist.is_main:  # rank 0 alone evaluates and writes; the others wait for its decision
                scores = self.score(model, dev) if dev else {"f1": -loss}
                if dev:  # shown in the next epoch's progress bar
                    self._last_dev = {"dev_f1" if s.task == "ner" else "dev_acc": f"{scores['f1'] * 100:.2f}"}
                record = {"epoch": epoch, "loss": loss, "dev_f1": scores["f1"] if dev else None, "seconds": seconds}
                history.append(record)
                improved = scores["f1"] > best["f1"]
                if improved:
                    best = {"f1": scores["f1"], "epoch": epoch}
                    bad_epochs = 0
                    model.meta.update(best_dev=record, history=history)
                    model.save(self.output, dtype=_dtype(s.save_dtype))
                    kill_point("best-model")
                else:
                    bad_epochs += 1
                if s.average:
                    top = self._keep_top(top, scores["f1"], model, s.average)
                dev_text = ""
                if dev:
                    dev_text = (f"dev {self._metric} {scores['f1'] * 100:.2f}  "
                                f"best {best['f1'] * 100:.2f} (epoch {best['epoch']})")
                self.log(f"epoch {epoch}: loss {loss:.4f}  {dev_text}  {seconds:.1f} s")
                self._save_state(model, optimizer, schedule, scaler, epoch, history, best, top, rng, torch_rngs)
            history, best, bad_epochs = distributed.broadcast((history, best, bad_epochs), self.dist)
        if s.average and len(top) > 1 and dev and self.dist.is_main:
            best = self._try_average(model, top, dev, best, history)
        best = distributed.broadcast(best, self.dist)
        return {"best": best, "history": history}

    def _epoch(self, model, train_loss, train, tag_ids, batches, optimizer, schedule, scaler, epoch) -> float:
        """One pass over ``batches`` (global batches of sentence indices); ``train_loss(features, tags)``
        is ``model.loss``, through DDP under torchrun. Returns the mean step loss."""
        s = self.settings
        model.train()
        total = 0.0
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16)
                    if s.precision != "fp32" else nullcontext())
        bar = _progress(batches, f"epoch {epoch}/{s.epochs}", self.progress)
        world, rank = self.dist.world_size, self.dist.rank
        micro = math.ceil(s.batch_size / world)  # sentences per pass on one rank: --batch-size is global
        shown = 0.0  # this rank's estimate of the mean loss, for the progress bar
        for n, global_batch in enumerate(bar, 1):
            optimizer.zero_grad(set_to_none=True)
            batch_loss = 0.0
            batch = distributed.shard(global_batch, rank, world) if world > 1 else global_batch
            # passes of --batch-size / N (accumulation). A rank that a global batch smaller than N left
            # nothing still takes part in the all-reduce: one pass of weight 0 over a sentence rank 0 also runs
            passes = [batch[i : i + micro] for i in range(0, len(batch), micro)] or [global_batch[:1]]
            for k, part in enumerate(passes, 1):
                features = to_device(model.featurize([train[i].tokens for i in part]), self.device)
                tags = pad_tags([tag_ids[i] for i in part]).to(self.device)
                share = len(part) / len(global_batch) if batch else 0.0  # the step's loss: the global batch's mean
                # all passes but the last only accumulate; the last one's backward all-reduces the step
                with nullcontext() if k == len(passes) else distributed.no_sync(train_loss):
                    with autocast:
                        raw = train_loss(features, tags)  # the loss reported; --flood trains on another
                        loss = flooded(raw, s.flood) * share
                    if not torch.isfinite(loss):
                        raise TagpipeError(f"epoch {epoch}: the loss became {loss.item()}; "
                                           "lower --lr or check the data")
                    scaler.scale(loss * world).backward()  # DDP averages over ranks: N x the shares sums them
                batch_loss += loss.item() if not s.flood else raw.item() * share
            if s.clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += batch_loss
            shown += batch_loss * len(global_batch) / max(len(batch), 1)
            if self.trace is not None:
                self.trace.step(model, distributed.all_reduce_sum(batch_loss, self.device) if world > 1 else batch_loss)
            if hasattr(bar, "set_postfix") and n % 20 == 0:
                bar.set_postfix(loss=f"{shown / n:.3f}", **self._last_dev, refresh=False)
        if world > 1:
            total = distributed.all_reduce_sum(total, self.device)  # the epoch loss of all ranks' sentences
        return total / max(len(batches), 1)

    def _prepare(self, model: Tagger) -> None:
        """Training-only options on a built or loaded model: grad checkpointing, torch.compile."""
        s = self.settings
        if s.grad_checkpointing and not model.encoder.enable_grad_checkpointing():
            self.log(f"--grad-checkpointing: {model.encoder_name} does not support it; ignored")
        if s.compile:
            model.encoder.compile(dynamic=True)  # in place: parameter names (and saved files) unchanged

    def _optimizer(self, model: Tagger, scaling: LrScaling | None = None) -> torch.optim.Optimizer:
        """The registered ``--optimizer`` over the encoder's parameter groups and the decoder (at --lr),
        the rates scaled for the global batch (``scaling``; by default this run's).

        When every group has the same learning rate they are merged into one group, as before
        parameter groups existed (so older checkpoints still resume)."""
        s = self.settings
        scaling = scaling or LrScaling.of(s)
        lr, encoder_lr = scaling.scaled(s.lr), scaling.scaled(s.encoder_lr)
        groups = [*model.encoder.parameter_groups(lr, encoder_lr),
                  {"params": list(model.decoder.parameters()), "lr": lr}]
        groups = [g for g in groups if g["params"]]
        if all(set(g) == {"params", "lr"} and g["lr"] == lr for g in groups):
            groups = [{"params": [p for g in groups for p in g["params"]], "lr": lr}]
        return build_optimizer(s.optimizer, groups, lr=lr, weight_decay=s.weight_decay)

    # -- checkpoint averaging ------------------------------------------------------------
    @staticmethod
    def _keep_top(top, f1: float, model: Tagger, k: int):
        snapshot = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
        top = sorted([*top, (f1, snapshot)], key=lambda x: -x[0])
        return top[:k]

    def _try_average(self, model: Tagger, top, dev, best, history):
        averaged = {}
        for name, tensor in top[0][1].items():
            stack = [snap[name] for _, snap in top]
            mean = torch.stack(stack).float().mean(0).to(tensor.dtype) if tensor.is_floating_point() else tensor
            averaged[name] = mean
        model.load_state_dict(averaged)
        scores = self.score(model, dev)
        self.log(f"average of the {len(top)} best checkpoints: dev {self._metric} {scores['f1'] * 100:.2f}")
        if scores["f1"] > best["f1"]:
            best = {"f1": scores["f1"], "epoch": best["epoch"], "averaged": len(top)}
            model.meta.update(best_dev={"dev_f1": scores["f1"], "averaged": len(top)}, history=history)
            model.save(self.output, dtype=_dtype(self.settings.save_dtype))
        return best

    # -- resume --------------------------------------------------------------------------
    def _save_state(self, model, optimizer, schedule, scaler, epoch, history, best, top, rng,
                    torch_rngs: list[torch.Tensor] | None = None) -> None:
        state = {  # plain data only: --resume reads it with torch.load(weights_only=True)
            "epoch": epoch, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(), "history": history, "best": best, "top": top,
            "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
            "torch_rng_ranks": torch_rngs if torch_rngs and len(torch_rngs) > 1 else None,  # one per rank
        }
        checkpoints.save(self.output, model, state, settings=self.settings.to_dict(), data=self.data)

    def _resume(self) -> tuple[Tagger, dict[str, Any], dict[str, list[Any]]]:
        """The checkpoint's model, trainer state and the setting changes accepted (checkpoints.load)."""
        if self.dist.is_main:  # a save killed between its renames: rank 0 alone puts the checkpoint back
            checkpoints.recover(self.output, self.log)
        distributed.broadcast(None, self.dist)  # the other ranks wait for it
        return checkpoints.load(self.output, settings=self.settings.to_dict(), data=self.data,
                                allow=self.settings.allow_change, device=self.device)


def _dtype(name: str) -> torch.dtype | None:
    return {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
