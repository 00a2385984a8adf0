#!/usr/bin/env bash
# Rust port vs PyTorch on the same libtorch: `make bench ARGS="..."`.
#
#   scripts/bench.sh [--config paper|tiny|FILE.yaml] [--rows "infer:256:1 train:64:1:bf16 ..."]
#                    [--reps N] [--iters N] [--warmup N] [--threads N] [--device cpu|cuda]
#                    [--out FILE.jsonl]
#
# A row is mode:size:batch[:precision] (mode train, infer or optim; precision fp32, bf16 or
# fp16, default fp32). Each runs as one fresh process per implementation and repetition (peak
# RSS is a process-lifetime peak): Rust (fused AdamW), PyTorch's modern baseline (the same
# precision under torch.autocast, GradScaler for fp16, AdamW(fused=True)) and PyTorch plain eager
# fp32 (torch.optim.AdamW as a user writes it), interleaved, the order rotated every repetition
# so that drifting machine load hits all alike. The table gives per-row medians over all timed
# iterations of all repetitions, the best single iteration, Rust/PyTorch ratios, and the spread
# of the per-repetition ratios as the noise. Raw rows go to --out.
# BIN (default target/release/promptir) and PYTHON (default .venv/bin/python) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."

config=paper rows="infer:256:1 train:64:1 train:128:1" reps=3 iters=5 warmup=1 threads="" device=cpu
out="results/bench-$(date +%Y%m%d-%H%M%S).jsonl"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) config=$2; shift 2 ;;
        --rows) rows=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BIN=${BIN:-target/release/promptir}
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $BIN ]] || { echo "bench.sh: $BIN missing: run cargo build --release (make build)" >&2; exit 2; }
[[ -x $PYTHON ]] || { echo "bench.sh: $PYTHON missing: run make setup" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
: >"$out"

common=(--iters "$iters" --warmup "$warmup" --device "$device" --json)
[[ -n $threads ]] && common+=(--threads "$threads")
model_json=""
run_rust() {
    "$BIN" bench --config "$config" --mode "$1" --size "$2" --batch "$3" --precision "$4" "${common[@]}"
}
run_torch() { # mode size batch precision optimizer
    local cfg=(--config "$config")
    # The reference script knows paper and tiny; other configs travel as the Rust row's model.
    [[ $config != paper && $config != tiny ]] && cfg=(--config "$config" --model-json "$model_json")
    "$PYTHON" scripts/bench_torch.py "${cfg[@]}" --mode "$1" --size "$2" --batch "$3" \
        --precision "$4" --optimizer "$5" "${common[@]}"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A eager_done # the eager fp32 baseline is the same for every precision of a row
for ((rep = 1; rep <= reps; rep++)); do
    for row in $rows; do
        IFS=: read -r mode size batch precision <<<"$row"
        precision=${precision:-fp32}
        impls=(rust torch-fused torch-eager)
        for ((k = 0; k < (rep - 1) % 3; k++)); do impls=("${impls[@]:1}" "${impls[0]}"); done
        for impl in "${impls[@]}"; do
            [[ $impl == torch-eager && -n ${eager_done[$rep:$mode:$size:$batch]:-} ]] && continue
            case $impl in
            rust)
                line=$(run_rust "$mode" "$size" "$batch" "$precision" | tail -n1)
                model_json=$("$PYTHON" -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["model"]))' "$line")
                ;;
            torch-*)
                [[ -z $model_json ]] && model_json=$(run_rust infer 8 1 fp32 | tail -n1 |
                    "$PYTHON" -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read())["model"]))')
                if [[ $impl == torch-fused ]]; then
                    line=$(run_torch "$mode" "$size" "$batch" "$precision" fused | tail -n1)
                else
                    line=$(run_torch "$mode" "$size" "$batch" fp32 default | tail -n1)
                    eager_done[$rep:$mode:$size:$batch]=1
                fi
                ;;
            esac
            echo "{\"rep\": $rep, \"precision\": \"$precision\", \"row\": $line}" >>"$out"
            echo "rep $rep/$reps $impl $mode ${size}x$size b$batch $precision done" >&2
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PYTHON" scripts/bench_table.py "$out" --load "$load_before" "$load_after"
echo "raw rows: $out"
