"""The builtin optimizers, registered through the same hook as any third-party plugin.

Factories are import strings, so registering them imports neither torch nor the modules. Each is
called as ``factory(param_groups, lr=..., weight_decay=...)``; its ``lr_scaling`` attribute is the
``--lr-scaling`` rule when the user gives none (sqrt for the Adam family, linear for SGD).
"""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_optimizers(register):
    register("tagpipe.adamw.v1", "tagpipe.plugins.optimizers.torch_optimizers:AdamW")
    register("tagpipe.adafactor.v1", "tagpipe.plugins.optimizers.torch_optimizers:Adafactor")
    register("tagpipe.sgd.v1", "tagpipe.plugins.optimizers.torch_optimizers:SGD")
    register("tagpipe.adax.v1", "tagpipe.plugins.optimizers.adax:AdaX")
