"""Builtin encoders, registered through the same hook as any third-party plugin.

Factories are given as ``"module:attribute"`` strings so listing plugins never imports torch.
"""

from pipeline import hookimpl


@hookimpl
def register_encoders(register):
    register("tagpipe.bilstm.v1", "plugins.bilstm:BiLSTMEncoder")
    register("tagpipe.bert.v1", "plugins.bert:BertEncoder")
    register("tagpipe.stack.v1", "plugins.stack:StackEncoder")
