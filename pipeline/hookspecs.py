"""The plugin contract: every hook tagpipe calls, and the markers plugins use.

A plugin is a module (found through the ``tagpipe`` entry-point group, or registered
in-process) with functions marked ``@hookimpl``. Builtin components use exactly these
hooks. Each ``register_*`` hook receives a ``register`` callable bound to one family::

    from tagpipe import hookimpl

    @hookimpl
    def register_decoders(register):
        register("myplugin.argmax.v1", "myplugin.decoders:ArgmaxDecoder")

``register(name, factory)`` takes the factory itself or a ``"module:attribute"`` string that
is imported only when the component is first used, so registration stays fast. Names are
versioned (``tagpipe.crf.v1``) because saved models record them. A name registered twice is
refused, and the message names both plugins: builtins register first, then plugins in load order,
whatever ``tryfirst`` / ``trylast`` say. A plugin with a hook not defined here (a misspelling) is
refused whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from tagpipe.registry import Register

PROJECT = "tagpipe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoders: ``nn.Module`` subclasses of ``tagpipe.components.Encoder`` that turn
    a batch of tokenised sentences into features ``[batch, seq, dim]``."""


@hookspec
def register_decoders(register: Register) -> None:
    """Register decoders: subclasses of ``tagpipe.components.Decoder`` that score tag sequences
    from encoder features (a loss for training, a best sequence for prediction)."""


@hookspec
def register_formats(register: Register) -> None:
    """Register corpus formats: ``tagpipe.components.CorpusFormat`` objects (a reader and,
    where it makes sense, a writer), chosen with ``--format NAME``."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks: ``tagpipe.tasks.Task`` subclasses, instantiated with no arguments, named as
    the ``"task"`` their model folders write in ``config.json``. A task tells ``tagpipe train
    --task NAME`` how to train such a model (and may add its own ``train`` options; one whose
    name is taken is left out with a warning), ``tagpipe evaluate`` how to score one, and
    ``tagpipe annotate`` which spaCy component runs one and which fields it adds to each JSON
    record."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimizers for ``tagpipe train --optimizer NAME``: a factory called as
    ``factory(param_groups, lr=..., weight_decay=...)`` that returns a ``torch.optim.Optimizer``
    (an ``Optimizer`` subclass with those arguments is one). ``param_groups`` are torch's parameter
    groups, some with an ``lr`` of their own (``--encoder-lr``). The optimizer's state dict must be
    plain data (tensors, numbers, strings, lists, dicts), since ``--resume`` reads checkpoints with
    ``weights_only``. An optional ``lr_scaling`` attribute on the factory (``"sqrt"``, ``"linear"``
    or ``"none"``; ``"sqrt"`` when absent) is the ``--lr-scaling`` rule used when the user gives none:
    how its learning rate follows the global batch size (``docs/training.md``)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``tagpipe`` command-line group (``cli.add_command(...)``)."""
