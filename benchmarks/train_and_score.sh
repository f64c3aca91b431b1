# Sourced by the issue-19 CoNLL scripts (multitask_conll.sh, recipes_conll.sh): slicing and one training run.
# The caller sets OUT, TEST, THREADS and the COMMON array of `tagpipe train` arguments.

slice() {  # FILE N TARGET: the first N sentences of a CoNLL file (-DOCSTART- lines dropped); N=0 copies it whole
    # written beside TARGET, then renamed: a second script sharing OUT (other seeds) never reads half a file
    if [ "$2" = 0 ]; then cp "$1" "$3.tmp$$"; else
        awk -v n="$2" 'BEGIN { RS = ""; ORS = "\n\n" } !/^-DOCSTART-/ && ++k <= n' "$1" > "$3.tmp$$"; fi
    mv "$3.tmp$$" "$3"
}

run() {  # NAME SEED TRAIN-ARGS...: train unless scored already, then score on $TEST (written atomically)
    local name=$1 seed=$2 dir=$OUT/models/$1-seed$2
    shift 2
    if [ ! -f "$OUT/scores/$name-seed$seed.json" ]; then
        echo "== $name seed $seed ($(date -u +%H:%M:%S))"
        rm -rf "$dir"
        python cli.py train "${COMMON[@]}" --seed "$seed" -o "$dir" "$@" --json > "$OUT/scores/$name-seed$seed.train.json"
        python cli.py evaluate "$TEST" --model "$dir" --json -q --threads "$THREADS" --device cpu \
            > "$OUT/scores/$name-seed$seed.json.tmp"
        mv "$OUT/scores/$name-seed$seed.json.tmp" "$OUT/scores/$name-seed$seed.json"
    fi
}
