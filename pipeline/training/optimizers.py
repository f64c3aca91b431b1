"""Optimizers by registry name: ``--optimizer`` checked against what the plugins registered
(``register_optimizers``), the optimizer's own ``--lr-scaling`` default, and building one.

The builtins (``plugins/optimizers``) register ``tagpipe.adamw.v1``, ``tagpipe.adafactor.v1``,
``tagpipe.sgd.v1`` and ``tagpipe.adax.v1``; :data:`OPTIMIZER_ALIASES` keeps the short names of the
command line (and of settings saved before optimizers were plugins) working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tagpipe.errors import TagpipeError

if TYPE_CHECKING:
    import torch

OPTIMIZER_ALIASES = {
    "adamw": "tagpipe.adamw.v1",
    "adam": "tagpipe.adamw.v1",
    "adafactor": "tagpipe.adafactor.v1",
    "sgd": "tagpipe.sgd.v1",
    "adax": "tagpipe.adax.v1",
}
#: how the learning rate follows the global batch size (``pipeline/training/lr_scaling.py``)
LR_SCALING_RULES = ("sqrt", "linear", "none")


def optimizer_name(name: str) -> str:
    """The registry name of ``--optimizer NAME`` (an alias or a registered name); one line listing the
    registered ones otherwise."""
    from tagpipe.host import get_registry

    full = OPTIMIZER_ALIASES.get(name, name)
    registered = get_registry().names("optimizer")
    if full not in registered:
        short = [alias for alias, target in OPTIMIZER_ALIASES.items() if target in registered]
        raise TagpipeError(f"--optimizer {name!r}: no such optimizer is registered (available: "
                           f"{', '.join(short + registered) or 'none'}; see `tagpipe plugins`)")
    return full


def default_lr_scaling(name: str) -> str:
    """The ``--lr-scaling`` rule optimizer ``name`` declares (its factory's ``lr_scaling``; sqrt if none)."""
    from tagpipe.host import get_registry

    entry = get_registry().entry("optimizer", name)
    rule = getattr(entry.load(), "lr_scaling", "sqrt")
    if rule not in LR_SCALING_RULES:
        raise TagpipeError(f"plugin {entry.plugin!r}: optimizer {name!r} declares lr_scaling {rule!r}, "
                           f"not one of {', '.join(LR_SCALING_RULES)}")
    return rule


def build_optimizer(name: str, groups: list[dict[str, Any]], *, lr: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    """``factory(groups, lr=lr, weight_decay=weight_decay)`` of the optimizer registered as ``name``,
    refused in one line naming the plugin when it is no ``torch.optim.Optimizer``."""
    import torch

    from tagpipe.host import get_registry

    entry = get_registry().entry("optimizer", name)
    try:
        optimizer = entry.load()(groups, lr=lr, weight_decay=weight_decay)
    except TagpipeError:
        raise
    except (TypeError, ValueError) as exc:
        raise TagpipeError(f"plugin {entry.plugin!r}: optimizer {name!r} cannot be built: {exc}") from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TagpipeError(f"plugin {entry.plugin!r}: optimizer {name!r} returned a {type(optimizer).__name__}, "
                           "not a torch.optim.Optimizer")
    return optimizer
