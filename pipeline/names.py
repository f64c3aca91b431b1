"""Names shared across the core and plugins, defined once and importable without torch or spaCy.

Command-line modules need these at start-up (``--help`` must stay fast), so they live here rather
than beside the torch code that uses them.
"""

from __future__ import annotations

#: the model folder's description: format version, task, labels, components, settings
CONFIG_FILE = "config.json"
#: the model folder's weights (safetensors: data only, never pickle)
WEIGHTS_FILE = "model.safetensors"
#: numeric precisions for prediction (``--precision``): autocast dtypes on top of fp32 weights
PRECISIONS = ("fp32", "bf16", "fp16")
#: what an NER component does with entities an earlier component set
EXISTING_ENTS = ("overwrite", "merge", "keep")
#: ``Doc._.tagpipe_columns``: tag columns (one tag per token each) a component wants in annotate's CoNLL output,
#: written after the token in this order instead of the tag and entity columns (a multi-task model's heads)
COLUMNS_EXTENSION = "tagpipe_columns"
