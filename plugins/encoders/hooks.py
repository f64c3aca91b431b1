"""Builtin encoders, registered through the same hook as any third-party plugin.

Factories are given as ``"module:attribute"`` strings so listing plugins never imports torch.
"""

from tagpipe import hookimpl


@hookimpl
def register_encoders(register):
    register("tagpipe.bilstm.v1", "tagpipe.plugins.encoders.bilstm:BiLSTMEncoder")
    register("tagpipe.bert.v1", "tagpipe.plugins.encoders.bert:BertEncoder")
    register("tagpipe.idcnn.v1", "tagpipe.plugins.encoders.idcnn:IDCNNEncoder")
    register("tagpipe.stack.v1", "tagpipe.plugins.encoders.stack:StackEncoder")
    register("tagpipe.transformer.v1", "tagpipe.plugins.encoders.transformer:TransformerEncoder")
