#!/usr/bin/env bash
# Issue 19's multi-task measurements on CoNLL-2003 (word POS chunk NER), BiLSTM-CRF recipe of the embedded
# model (benchmarks/configs/conll2003-multitask.json: conll2003-bilstm-crf.json without --average, which
# --task multi does not support, so the single-task rows train without it too), 3 seeds each:
#   - single-task NER (--task ner, column 3), POS (--task tag --tag-column 1), chunks (--task ner --tag-column 2);
#   - NER+POS+chunk multi-task under --task-weighting fixed, parallel and main-aux (main task: ner);
#   - test scores of every model (NER F1, POS accuracy, chunk F1), mean +- sd over the seeds: OUT/summary.md;
#   - annotate tokens/s on the test text (--no-scores): the multi-task model (one pass) against single-task NER
#     then single-task POS, two processes one after the other (the first seed's models), 3 rounds, median.
# Usage: bash benchmarks/multitask_conll.sh [OUT]
#   env: SEEDS="1 2 3"  EPOCHS=25  SLICE=0 (first N training sentences; 0: all)  TEST_SLICE=0  THREADS=1  ROUNDS=3
#        CONFIG=benchmarks/configs/conll2003-multitask.json (conll2003-glove-multitask.json: the GloVe recipe of
#        today's embedded model, whose single-task NER runs are train_default_model.sh's)
#        MODELS="ner pos chunk multi-fixed multi-parallel multi-main-aux" (a subset trains only those; the speed
#        rounds need ner, pos and multi-main-aux, ROUNDS=0 skips them)
#        WEIGHTS= (--task-weights of the multi-task models, e.g. pos=0.1,chunk=0.1; their names gain "-w" and it)
#        PRIVATE= (--private-layers of the multi-task models, e.g. ner=1; their names gain "-p" and it)
#   e.g. a smoke run: SEEDS=1 EPOCHS=1 SLICE=200 TEST_SLICE=100 ROUNDS=1 bash benchmarks/multitask_conll.sh out/mt-smoke
# Full corpora: about 20 CPU-minutes per single-task model and 25-60 per multi-task one (parallel and
# main-aux run the encoder's backward pass once per head) on one thread; 18 trainings in all.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TAGPIPE_DATA:-$HOME/.cache/tagpipe-data}/conll2003
OUT=${1:-out/multitask-conll}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-25}
SLICE=${SLICE:-0}
TEST_SLICE=${TEST_SLICE:-0}
THREADS=${THREADS:-1}
CONFIG=${CONFIG:-benchmarks/configs/conll2003-multitask.json}
WEIGHTS=${WEIGHTS:-}
PRIVATE=${PRIVATE:-}
TAG=${WEIGHTS:+-w$WEIGHTS}${PRIVATE:+-p$PRIVATE}  # the multi-task models' names carry their options
mkdir -p "$OUT/data" "$OUT/models" "$OUT/scores" "$OUT/speed"

source benchmarks/train_and_score.sh
slice "$DATA/train.txt" "$SLICE" "$OUT/data/train.txt"
slice "$DATA/valid.txt" "$TEST_SLICE" "$OUT/data/valid.txt"
slice "$DATA/test.txt" "$TEST_SLICE" "$OUT/data/test.txt"
TRAIN=$OUT/data/train.txt DEV=$OUT/data/valid.txt TEST=$OUT/data/test.txt
COMMON=(--config "$CONFIG" --train "$TRAIN" --dev "$DEV" --epochs "$EPOCHS" --threads "$THREADS" --device cpu -q)

MODELS=${MODELS:-"ner pos chunk multi-fixed multi-parallel multi-main-aux"}
for seed in $SEEDS; do
    for model in $MODELS; do
        case $model in
            ner) run ner "$seed" --task ner --tag-column 3 ;;
            pos) run pos "$seed" --task tag --tag-column 1 ;;
            chunk) run chunk "$seed" --task ner --tag-column 2 ;;
            multi-fixed | multi-parallel | multi-main-aux)
                run "$model$TAG" "$seed" --task multi --columns ner=3,pos=1,chunk=2 \
                    --task-weighting "${model#multi-}" ${WEIGHTS:+--task-weights "$WEIGHTS"} \
                    ${PRIVATE:+--private-layers "$PRIVATE"} ;;
            *) echo "unknown model: $model" >&2; exit 2 ;;
        esac
    done
done

# annotate speed: the test text, one sentence per line; wall time of whole processes (start-up included)
FIRST=$(echo "$SEEDS" | awk '{ print $1 }')
awk 'BEGIN { RS = ""; ORS = "\n" } !/^-DOCSTART-/ { line = ""; n = split($0, rows, "\n");
     for (i = 1; i <= n; i++) { split(rows[i], f, " "); line = line (i > 1 ? " " : "") f[1] } print line }' \
    "$TEST" > "$OUT/speed/test.txt"
annotate() {  # OUTPUT MODEL...: seconds of one annotate process
    local out=$1 start end
    shift
    rm -f "$out"
    start=$(date +%s.%N)
    # --no-scores: the multi-task component computes no confidences, so neither do the single-task ones
    python cli.py annotate "$OUT/speed/test.txt" "${@/#/--model=}" -o "$out" -q --no-scores --threads "$THREADS" \
        --device cpu
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}
for round in $(seq "${ROUNDS:-3}"); do
    multi=$(annotate "$OUT/speed/multi.jsonl" "$OUT/models/multi-main-aux$TAG-seed$FIRST")
    ner=$(annotate "$OUT/speed/ner.jsonl" "$OUT/models/ner-seed$FIRST")
    pos=$(annotate "$OUT/speed/pos.jsonl" "$OUT/models/pos-seed$FIRST")
    echo "{\"round\": $round, \"multi\": $multi, \"ner\": $ner, \"pos\": $pos}" >> "$OUT/speed/seconds.jsonl"
done

python - "$OUT" <<'PY'
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = {}  # (model, head) -> [score per seed]
for path in sorted(out.glob("scores/*-seed*.json")):
    if path.name.endswith(".train.json"):
        continue
    name = path.name.rsplit("-seed", 1)[0]
    scores = json.loads(path.read_text())
    heads = scores["heads"] if "heads" in scores else {name: scores}  # single-task models: ner, pos, chunk
    for head, s in heads.items():
        rows.setdefault((name, head), []).append(s["f1"] if "f1" in s else s["accuracy"])
lines = ["| model | head | metric | test (%) mean ± sd | seeds |", "| --- | --- | --- | --- | --- |"]
for (name, head), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    sd = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    metric = "accuracy" if head == "pos" else "F1"
    lines.append(f"| {name} | {head} | {metric} | {statistics.mean(values) * 100:.2f} ± {sd:.2f} | {len(values)} |")
seconds = out / "speed" / "seconds.jsonl"
if seconds.is_file():
    tokens = sum(len(line.split()) for line in (out / "speed" / "test.txt").read_text().splitlines())
    speed = [json.loads(line) for line in seconds.read_text().splitlines()]
    multi = statistics.median(r["multi"] for r in speed)
    pair = statistics.median(r["ner"] + r["pos"] for r in speed)
    lines += ["", f"annotate, {tokens:,} test tokens, median of {len(speed)} rounds (whole processes): multi-task "
              f"{tokens / multi:,.0f} tokens/s; NER then POS {tokens / pair:,.0f} tokens/s; ratio {pair / multi:.2f}x"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
