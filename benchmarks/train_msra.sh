#!/usr/bin/env bash
# MSRA Chinese NER (character level, BMES) with the BiLSTM-CRF: train, then score the official test split.
# MSRA has no dev set: the last 2,500 training segments are held out as one (the model never trains on them).
# Usage: bash benchmarks/train_msra.sh [OUTPUT]   (data from ../shared/corpora/get-pypi-data.sh)
set -euo pipefail
DATA=${TAGPIPE_DATA:-$HOME/.cache/tagpipe-data}/msra
OUT=${1:-models/msra-bilstm-crf}
SPLIT=out/msra-split
mkdir -p "$SPLIT"
python - "$DATA/train.txt" "$SPLIT" <<'PY'
import sys
blocks = [b for b in open(sys.argv[1], encoding="utf-8").read().split("\n\n") if b.strip()]
for name, part in (("train", blocks[:-2500]), ("dev", blocks[-2500:])):
    with open(f"{sys.argv[2]}/{name}.txt", "w", encoding="utf-8") as fh:
        fh.write("\n\n".join(b.strip("\n") for b in part) + "\n")
print(f"train {len(blocks) - 2500} segments, dev 2500")
PY
tagpipe train --config benchmarks/configs/msra-bilstm-crf.json --train "$SPLIT/train.txt" --dev "$SPLIT/dev.txt" \
    --output "$OUT"
tagpipe evaluate "$DATA/test.txt" --format conll --scheme bmes --model "$OUT"
