#!/usr/bin/env bash
# Issue 19's training-recipe measurements on CoNLL-2003 NER, the multi-task script's single-task recipe
# (benchmarks/configs/conll2003-multitask.json, BiLSTM-CRF without vectors), on the first SLICE training
# sentences (default 1,000: flooding matters where a model can memorise its data), full dev and test, 3 seeds:
#   - base:         AdamW, batch 32 (the recipe as tuned);
#   - flood-B:      --flood B for each B in FLOODS (mean loss per sentence, the unit the epochs print);
#   - acc4-RULE:    global batch 128 (--batch-size 32 --accumulate 4, reference 32) with --lr-scaling
#                   sqrt, linear and none;
#   - adax, adafactor: the other optimisers at the same rate and schedule; adafactor also at its own
#     default rate, 0.01.
# Summary (OUT/summary.md): test F1 mean +- sd, best dev F1, the first epoch whose dev F1 reaches 95% of the
# run's best, and the training loss of the kept (best dev) epoch.
# Usage: bash benchmarks/recipes_conll.sh [OUT]
#   env: SEEDS="1 2 3"  EPOCHS=25  SLICE=1000 (0: all)  FLOODS="0.5 1.0"  THREADS=1
#   smoke: SEEDS=1 EPOCHS=1 SLICE=100 bash benchmarks/recipes_conll.sh out/recipes-smoke
# On one thread of the 2-vCPU EPYC: ~1.5 minutes per run at SLICE=1000 (27 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TAGPIPE_DATA:-$HOME/.cache/tagpipe-data}/conll2003
OUT=${1:-out/recipes-conll}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-25}
SLICE=${SLICE:-1000}
FLOODS=${FLOODS:-"0.5 1.0"}
THREADS=${THREADS:-1}
CONFIG=benchmarks/configs/conll2003-multitask.json
mkdir -p "$OUT/data" "$OUT/models" "$OUT/scores"

source benchmarks/train_and_score.sh
slice "$DATA/train.txt" "$SLICE" "$OUT/data/train.txt"
TEST=$DATA/test.txt
COMMON=(--config "$CONFIG" --task ner --tag-column 3 --train "$OUT/data/train.txt" --dev "$DATA/valid.txt"
        --epochs "$EPOCHS" --threads "$THREADS" --device cpu -q)

for seed in $SEEDS; do
    run base "$seed"
    for level in $FLOODS; do run "flood-$level" "$seed" --flood "$level"; done
    for rule in sqrt linear none; do
        run "acc4-$rule" "$seed" --batch-size 32 --accumulate 4 --reference-batch-size 32 --lr-scaling "$rule"
    done
    run adax "$seed" --optimizer adax
    run adafactor "$seed" --optimizer adafactor
    # torch's Adafactor scales each step by the parameter's RMS (a relative step): AdamW's rate is far too small
    run adafactor-lr0.01 "$seed" --optimizer adafactor --lr 0.01
done

python - "$OUT" <<'PY'
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs: dict[str, list[dict]] = {}
for path in sorted(out.glob("scores/*-seed*.json")):
    if path.name.endswith(".train.json"):
        continue
    name, seed = path.stem.rsplit("-seed", 1)
    meta = json.loads((out / "models" / f"{name}-seed{seed}" / "config.json").read_text())["meta"]
    dev = [h["dev_f1"] for h in meta["history"]]
    reached = next(i for i, f1 in enumerate(dev, 1) if f1 >= 0.95 * max(dev))
    runs.setdefault(name, []).append({"test": json.loads(path.read_text())["f1"], "dev": max(dev),
                                      "epoch95": reached, "loss": meta["history"][-1]["loss"],
                                      "lr": (meta.get("lr_scaling") or {}).get("lr")})


def cell(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * scale:.{digits}f} ± {sd:.{digits}f}"


lines = ["| run | test F1 (%) | best dev F1 (%) | epoch dev F1 >= 95% of best | training loss at the kept epoch | lr used | seeds |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
order = ["base", "flood", "acc4-sqrt", "acc4-linear", "acc4-none", "adax", "adafactor"]
for name, rs in sorted(runs.items(), key=lambda kv: next(i for i, o in enumerate([*order, ""]) if kv[0].startswith(o))):
    lines.append(f"| {name} | {cell([r['test'] for r in rs])} | {cell([r['dev'] for r in rs])} | "
                 f"{cell([r['epoch95'] for r in rs], 1, 1)} | {cell([r['loss'] for r in rs], 1, 3)} | "
                 f"{rs[0]['lr'] if rs[0]['lr'] is not None else '-'} | {len(rs)} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
