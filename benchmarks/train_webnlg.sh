#!/usr/bin/env bash
# WebNLG (exact-match: 5,019 / 500 / 703 sentences, 216 relations) with all-MiniLM-L6-v2:
# both triple heads, then the UniLM seq2seq both ways; each model is scored on the test split.
# Usage: bash benchmarks/train_webnlg.sh [OUTPUT_DIR] [pointer gplinker d2t t2t pointer-20ep]
# (MiniLM from ../shared/corpora/get-pypi-data.sh; results in docs/benchmarks.md)
set -euo pipefail
WEBNLG=${WEBNLG:-$(dirname "$0")/../../shared/corpora/webnlg}
MINILM=${TAGPIPE_DATA:-$HOME/.cache/tagpipe-data}/minilm
OUT=${1:-models/webnlg}
shift || true
RUNS=${*:-pointer gplinker d2t t2t}
for run in $RUNS; do
    case $run in
        pointer*|gplinker*) extra=(--relations "$WEBNLG/rel2id.json") ;;
        d2t|t2t) extra=() ;;
        *) echo "unknown run $run (the names of configs/webnlg-*.json)" >&2; exit 2 ;;
    esac
    config=$(dirname "$0")/configs/webnlg-$run.json
    format=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['format'])" "$config")
    tagpipe train --config "$config" --train "$WEBNLG/train.json" --dev "$WEBNLG/val.json" \
        --pretrained "$MINILM" "${extra[@]}" --output "$OUT/$run"
    tagpipe evaluate "$WEBNLG/test.json" --format "$format" --model "$OUT/$run" --json --threads 1 \
        > "$OUT/$run.test.json"
    cat "$OUT/$run.test.json"
done
