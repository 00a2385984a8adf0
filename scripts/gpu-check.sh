#!/usr/bin/env bash
# scripts/gpu-check.sh BIN TORCH_LIB OUTDIR
#
# Checks a built promptir binary on a CUDA machine and writes everything to OUTDIR:
#   doctor.txt          `promptir doctor` (libtorch, CUDA, cuDNN, threads)
#   env.txt             the python/torch used for the PyTorch rows, nvidia-smi, git commit
#   bench.jsonl/.md     Rust vs PyTorch eager, paper config: training step at 128x128 batch 8 and
#                       inference at 256x256 (scripts/bench.sh rows, Rust in its default layout)
#   layouts.jsonl/.md   the Rust rows again in both activation layouts (contiguous, channels-last)
#   train-smoke.txt     PLACEHOLDER: a short training run on synthetic data (added with `train`)
#   summary.md          all of the above in one page
# TORCH_LIB is the `lib` folder of a torch 2.11.0 install; it goes first on LD_LIBRARY_PATH and
# its python (the venv around it, or $PYTHON) runs the PyTorch rows.
#
# Without CUDA the same steps run on CPU with a small config (GPU_CHECK_CPU_CONFIG, default
# tiny) and one iteration, so the script stays tested (tests/gpu_check.rs).
# GPU_CHECK_ITERS / GPU_CHECK_WARMUP / GPU_CHECK_REPS override the iteration counts and
# GPU_CHECK_THREADS the CPU threads (default: libtorch's on CUDA, 1 on the CPU path, which keeps
# it quick on a busy machine).
set -euo pipefail
if [[ $# -ne 3 ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
BIN=$(realpath "$1") TORCH_LIB=$(realpath "$2") OUTDIR=$3
cd "$(dirname "$0")/.."
[[ -x $BIN ]] || { echo "gpu-check: $BIN is not an executable" >&2; exit 2; }
[[ -f $TORCH_LIB/libtorch_cpu.so ]] || { echo "gpu-check: $TORCH_LIB has no libtorch_cpu.so" >&2; exit 2; }
mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The python that owns TORCH_LIB: <venv>/lib/pythonX.Y/site-packages/torch/lib.
if [[ -z ${PYTHON:-} ]]; then
    venv=$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$TORCH_LIB")")")")")
    PYTHON=$venv/bin/python
    [[ -x $PYTHON ]] || PYTHON=python3
fi
export BIN PYTHON

step() { echo "== $*" >&2; }

step "doctor"
"$BIN" doctor | tee "$OUTDIR/doctor.txt"

step "environment"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "binary: $BIN"
    echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
    "$PYTHON" -c 'import torch; print("python torch:", torch.__version__, torch.__file__); print("torch cuda:", torch.version.cuda, "available:", torch.cuda.is_available())'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: absent"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
} | tee "$OUTDIR/env.txt"

if grep -Eq '^cuda available +true' "$OUTDIR/doctor.txt"; then
    device=cuda config=paper rows="train:128:8 infer:256:1"
    iters=${GPU_CHECK_ITERS:-20} warmup=${GPU_CHECK_WARMUP:-5} reps=${GPU_CHECK_REPS:-2}
    threads=${GPU_CHECK_THREADS:-}
else
    echo "gpu-check: no CUDA device: running the CPU path (config ${GPU_CHECK_CPU_CONFIG:-tiny})" >&2
    device=cpu config=${GPU_CHECK_CPU_CONFIG:-tiny} rows="train:32:2 infer:32:1"
    iters=${GPU_CHECK_ITERS:-1} warmup=${GPU_CHECK_WARMUP:-1} reps=${GPU_CHECK_REPS:-1}
    threads=${GPU_CHECK_THREADS:-1}
fi
thread_args=()
[[ -n $threads ]] && thread_args=(--threads "$threads")
echo "device: $device, config: $config, rows: $rows, iters: $iters, warmup: $warmup, reps: $reps, threads: ${threads:-default}" >>"$OUTDIR/env.txt"

step "bench: Rust vs PyTorch eager on $device"
bash scripts/bench.sh --config "$config" --rows "$rows" --reps "$reps" --iters "$iters" \
    --warmup "$warmup" --device "$device" "${thread_args[@]}" --out "$OUTDIR/bench.jsonl" |
    tee "$OUTDIR/bench.md"

step "Rust in both activation layouts"
: >"$OUTDIR/layouts.jsonl"
for row in $rows; do
    IFS=: read -r mode size batch <<<"$row"
    for layout in contiguous channels-last; do
        line=$("$BIN" bench --config "$config" --mode "$mode" --size "$size" --batch "$batch" \
            --device "$device" --iters "$iters" --warmup "$warmup" --layout "$layout" "${thread_args[@]}" --json | tail -n1)
        echo "$line" >>"$OUTDIR/layouts.jsonl"
    done
done
"$PYTHON" - "$OUTDIR/layouts.jsonl" >"$OUTDIR/layouts.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| mode | size | batch | device | layout | median ms | min ms | img/s | peak RSS MiB | CUDA reserved MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    cuda = "-" if r["cuda_reserved_mib"] is None else f"{r['cuda_reserved_mib']:.0f}"
    print(f"| {r['mode']} | {r['size']}x{r['size']} | {r['batch']} | {r['device']} | {r['layout']} "
          f"| {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['images_per_s']:.2f} | {r['peak_rss_mib']:.0f} | {cuda} |")
EOF
cat "$OUTDIR/layouts.md"

step "training smoke"
# TODO(lead): once `promptir train` exists, run a short training on synthetic data here (a few
# steps of the paper config on $device) and check that the loss is finite and decreasing.
echo "PLACEHOLDER: training smoke not implemented yet (needs \`promptir train\`)" | tee "$OUTDIR/train-smoke.txt"

{
    echo "# promptir gpu-check"
    echo
    echo '```'
    cat "$OUTDIR/env.txt"
    echo
    cat "$OUTDIR/doctor.txt"
    echo '```'
    echo
    echo "## Rust vs PyTorch eager"
    echo
    cat "$OUTDIR/bench.md"
    echo
    echo "## Rust activation layouts"
    echo
    cat "$OUTDIR/layouts.md"
    echo
    echo "CUDA reserved = device memory in use after the row minus before the model was built"
    echo "(the caching allocator's peak reservation; tch does not expose max_memory_allocated)."
    echo
    echo "## Training smoke"
    echo
    cat "$OUTDIR/train-smoke.txt"
} >"$OUTDIR/summary.md"
step "wrote $OUTDIR/summary.md"
