"""The builtin decoders, registered through the same hook as any third-party plugin.

Factories are import strings, so registering them imports neither torch nor the modules.
"""

from __future__ import annotations

from pipeline import hookimpl


@hookimpl
def register_decoders(register):
    register("tagpipe.softmax.v1", "plugins.softmax:SoftmaxDecoder")
    register("tagpipe.crf.v1", "plugins.crf:CRFDecoder")
    register("tagpipe.memm.v1", "plugins.memm:MEMMDecoder")
    register("tagpipe.bimemm.v1", "plugins.memm:BiMEMMDecoder")
