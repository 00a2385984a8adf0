#!/usr/bin/env bash
# Data-parallel training on this machine's CPU cores: `make bench-dist`.
#
#   scripts/bench_dist.sh [--config paper|tiny] [--patch N] [--batch N] [--steps N] [--out DIR]
#
# Trains --steps steps of the experiment (paper: experiments/base.yaml; tiny:
# experiments/tiny.yaml; L1 loss, no validation) on `promptir synth` data three ways, each with
# the same global batch (2 x --batch):
#   1 process x 2 threads                 (train.batch_size 2 x batch)
#   2 processes x 1 thread (torchrun)     (train.batch_size batch each, gradients in 25 MiB buckets)
#   2 processes x 1 thread, per parameter (train.bucket_mb 0: one all-reduce per parameter)
# and prints training images/s (TensorBoard's train/images_per_s after the first log point) and
# the mean time per step. BIN (default target/release/promptir) and PYTHON (.venv/bin/python)
# can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."

config=paper patch=64 batch=1 steps=24 out="results/bench-dist-$(date +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) config=$2; shift 2 ;;
        --patch) patch=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench_dist.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BIN=${BIN:-target/release/promptir}
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $BIN ]] || { echo "bench_dist.sh: $BIN missing: run make build" >&2; exit 2; }
case $config in
    paper) exp=experiments/base.yaml ;;
    tiny) exp=experiments/tiny.yaml ;;
    *) echo "bench_dist.sh: --config paper or tiny" >&2; exit 2 ;;
esac
mkdir -p "$out"
"$BIN" synth --output "$out/data" --train 64 --test 2 --size $((patch + 32)) --seed 0 >/dev/null

common=(--config "$exp" --data "$out/data" --device cpu --logs-dir "$out/logs" --weights-dir "$out/weights"
    --set train.max_steps="$steps" --set train.patch_size="$patch" --set train.log_every=$((steps / 4))
    --set train.val_every=1000 --set train.save_every=0 --set data.val_fraction=0
    --set loss.ssim=0 --set loss.perceptual=0 --set train.warmup_epochs=0 --set data.workers=1 --quiet)
port=$((29500 + RANDOM % 1000))
echo "== 1 process x 2 threads, batch $((2 * batch))" >&2
OMP_NUM_THREADS=2 "$BIN" train "${common[@]}" --name one --set train.batch_size=$((2 * batch)) >/dev/null
for run in two two_per_param; do
    bucket=25
    [[ $run == two_per_param ]] && bucket=0
    echo "== 2 processes x 1 thread, batch $batch each, bucket_mb $bucket" >&2
    OMP_NUM_THREADS=1 "$PYTHON" -m torch.distributed.run --no-python --nproc-per-node 2 \
        --master-port $((port++)) "$BIN" train "${common[@]}" --name "$run" \
        --set train.batch_size="$batch" --set train.bucket_mb=$bucket >/dev/null 2>"$out/$run.err" ||
        { cat "$out/$run.err" >&2; exit 1; }
done

"$PYTHON" - "$out" "$config" "$patch" "$batch" "$steps" <<'EOF'
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out, config, patch, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"{config} config, patch {patch}, global batch {2 * batch}, {steps} steps, CPU\n")
print("| setup | images/s | ms per step |")
print("|---|---:|---:|")
rows = [("one", "1 process x 2 threads"), ("two", "2 processes x 1 thread, 25 MiB buckets"),
        ("two_per_param", "2 processes x 1 thread, one all-reduce per parameter")]
for run, label in rows:
    ea = EventAccumulator(f"{out}/logs/{run}", size_guidance={"scalars": 0})
    ea.Reload()
    ips = [e.value for e in ea.Scalars("train/images_per_s")][1:]  # the first interval holds warm-up
    mean = sum(ips) / len(ips)
    print(f"| {label} | {mean:.2f} | {2 * batch * 1e3 / mean:.0f} |")
EOF
