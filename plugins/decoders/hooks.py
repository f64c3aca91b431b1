"""The builtin decoders, registered through the same hook as any third-party plugin.

Factories are import strings, so registering them imports neither torch nor the modules.
"""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_decoders(register):
    register("tagpipe.softmax.v1", "tagpipe.plugins.decoders.softmax:SoftmaxDecoder")
    register("tagpipe.crf.v1", "tagpipe.plugins.decoders.crf:CRFDecoder")
    register("tagpipe.memm.v1", "tagpipe.plugins.decoders.memm:MEMMDecoder")
    register("tagpipe.bimemm.v1", "tagpipe.plugins.decoders.memm:BiMEMMDecoder")
