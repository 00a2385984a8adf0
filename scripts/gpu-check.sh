#!/usr/bin/env bash
# scripts/gpu-check.sh BIN TORCH_LIB OUTDIR
#
# Checks a built promptir binary on a CUDA machine and writes everything to OUTDIR:
#   doctor.txt          `promptir doctor` (libtorch, CUDA, cuDNN, threads)
#   env.txt             the python/torch used for the PyTorch rows, nvidia-smi, git commit
#   bench.jsonl/.md     Rust vs PyTorch (AMP + fused AdamW, and plain eager fp32), paper config:
#                       training step at 128x128 batch 8 in fp32, bf16 and fp16, the AdamW step
#                       alone, inference at 256x256 (scripts/bench.sh rows)
#   layouts.jsonl/.md   the Rust fp32 and bf16 rows again in both activation layouts
#   profile-train-bf16.json/.md  the first training row in bf16 under libtorch's profiler
#                       (`bench --profile`): a Chrome trace, and its time per op and per GPU
#                       kernel (scripts/profile_table.py)
#   train-smoke.md      `promptir train` for SMOKE_STEPS steps (200) of the paper config at patch
#                       128, batch 8, on `promptir synth` data, in fp32, bf16 and fp16: first and
#                       last logged loss (finite, decreasing), train images/s beside PyTorch's
#                       (bench rows), final validation PSNR
#   dist-smoke.txt      `promptir train` under torchrun in a process group of one (NCCL on CUDA,
#                       Gloo on CPU), 4 steps
#   zoo.jsonl/.md       Restormer, NAFNet and AdaIR (their experiments/<arch>.yaml) beside PyTorch
#                       running their references: a bf16 training step at 128x128 batch 8 and
#                       bf16 inference at 256x256
#   stages.md           each stage: ok or FAILED, and its seconds
#   summary.md          all of the above in one page, rewritten after each stage
# The stages run in that order of need (bench, training smoke, data-parallel smoke, profile,
# layouts, the other networks), each even when one before it failed; the exit status is 1 if any failed. A run
# stopped by a time limit (`timeout`) leaves summary.md with the stages it finished.
# TORCH_LIB is the `lib` folder of a torch 2.11.0 install; it goes first on LD_LIBRARY_PATH and
# its python (the venv around it, or $PYTHON) runs the PyTorch rows.
#
# Without CUDA the same steps and kinds of row run on CPU with a small config
# (GPU_CHECK_CPU_CONFIG, default tiny; tiny_<arch>.yaml for the other networks, one bf16 training
# row each), one iteration and a short smoke (patch 32, batch 2), so
# the script stays tested (tests/it/gpu_check.rs).
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
    "$PYTHON" -c 'import torch; print("python torch:", torch.__version__, torch.__file__); print("torch cuda:", torch.version.cuda, "available:", torch.cuda.is_available())' ||
        echo "python torch: unavailable ($PYTHON)" # the Rust-only stages still run
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: absent"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
} | tee "$OUTDIR/env.txt"

if grep -Eq '^cuda available +true' "$OUTDIR/doctor.txt"; then
    device=cuda config=paper
    rows="train:128:8 train:128:8:bf16 train:128:8:fp16 optim:128:8 infer:256:1 infer:256:1:bf16"
    iters=${GPU_CHECK_ITERS:-20} warmup=${GPU_CHECK_WARMUP:-5} reps=${GPU_CHECK_REPS:-2}
    threads=${GPU_CHECK_THREADS:-}
    # About four epochs: `last` (weights and moments, ~430 MB) is saved after each.
    smoke_exp=experiments/base.yaml smoke_patch=128 smoke_batch=8 smoke_size=256 smoke_pairs=400
    smoke_steps=${SMOKE_STEPS:-200}
    zoo_configs="experiments/restormer.yaml experiments/nafnet.yaml experiments/adair.yaml experiments/moce_ir.yaml"
    zoo_rows="train:128:8:bf16 infer:256:1:bf16"
else
    echo "gpu-check: no CUDA device: running the CPU path (config ${GPU_CHECK_CPU_CONFIG:-tiny})" >&2
    device=cpu config=${GPU_CHECK_CPU_CONFIG:-tiny}
    rows="train:32:2 train:32:2:bf16 train:32:2:fp16 optim:32:2 infer:32:1 infer:32:1:bf16"
    iters=${GPU_CHECK_ITERS:-1} warmup=${GPU_CHECK_WARMUP:-1} reps=${GPU_CHECK_REPS:-1}
    threads=${GPU_CHECK_THREADS:-1}
    smoke_exp=experiments/tiny.yaml smoke_patch=32 smoke_batch=2 smoke_size=48 smoke_pairs=24
    smoke_steps=${SMOKE_STEPS:-10}
    zoo_configs="experiments/tiny_restormer.yaml experiments/tiny_nafnet.yaml experiments/tiny_adair.yaml experiments/tiny_moce_ir.yaml"
    zoo_rows="train:32:2:bf16"
fi
thread_args=()
[[ -n $threads ]] && thread_args=(--threads "$threads")
echo "device: $device, config: $config, rows: $rows, iters: $iters, warmup: $warmup, reps: $reps, threads: ${threads:-default}" >>"$OUTDIR/env.txt"

# The stages. Each runs even when one before it failed (a GPU machine may be lent for one call:
# a CUDA bug in one stage must not cost the others their numbers), and summary.md is rewritten
# after each, so a run stopped by a time limit still leaves what it measured.

bench_rows() {
    bash scripts/bench.sh --config "$config" --rows "$rows" --reps "$reps" --iters "$iters" \
        --warmup "$warmup" --device "$device" "${thread_args[@]}" --out "$OUTDIR/bench.jsonl" |
        tee "$OUTDIR/bench.md"
}

# The other networks, each beside PyTorch running its reference (bf16: AdaIR's FFTs in fp32).
zoo_bench() {
    : >"$OUTDIR/zoo.jsonl"
    : >"$OUTDIR/zoo.md"
    local cfg failed=0
    for cfg in $zoo_configs; do
        bash scripts/bench.sh --config "$cfg" --rows "$zoo_rows" --reps 1 --iters "$iters" \
            --warmup "$warmup" --device "$device" "${thread_args[@]}" --out "$OUTDIR/zoo-one.jsonl" \
            >"$OUTDIR/zoo-one.md" || { echo "gpu-check: bench of $cfg failed" >&2; failed=1; continue; }
        cat "$OUTDIR/zoo-one.jsonl" >>"$OUTDIR/zoo.jsonl"
        { echo "### $cfg"; echo; grep '^|' "$OUTDIR/zoo-one.md"; echo; } >>"$OUTDIR/zoo.md"
    done
    rm -f "$OUTDIR"/zoo-one.{jsonl,md}
    cat "$OUTDIR/zoo.md"
    return "$failed"
}

# `promptir train` arguments for the smoke data and sizes; each run adds --name and the rest.
smoke_train_args=(--config "$smoke_exp" --data "$OUTDIR/smoke-data" --device "$device"
    --logs-dir "$OUTDIR/smoke-logs" --weights-dir "$OUTDIR/smoke-weights"
    --set train.patch_size="$smoke_patch" --set train.batch_size="$smoke_batch"
    --set train.val_every=1000 --set train.save_every=0 --set loss.perceptual=0
    --set data.workers=2 --quiet)

train_smoke() {
    "$BIN" synth --output "$OUTDIR/smoke-data" --train "$smoke_pairs" --test 2 --size "$smoke_size" \
        --seed 0 >/dev/null || return 1
    local precision failed=0
    for precision in fp32 bf16 fp16; do
        "$BIN" train "${smoke_train_args[@]}" --name "smoke-$precision" --set train.precision="$precision" \
            --set train.max_steps="$smoke_steps" --set train.warmup_epochs=0 \
            --set train.log_every=$(((smoke_steps + 9) / 10)) --set train.val_images=0 \
            >"$OUTDIR/smoke-$precision.log" 2>&1 ||
            { tail -n 20 "$OUTDIR/smoke-$precision.log" >&2; echo "gpu-check: $precision training failed" >&2; failed=1; }
    done
    "$PYTHON" - "$OUTDIR" >"$OUTDIR/train-smoke.md" <<'PY' || failed=1
import json, math, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = sys.argv[1]
bench_file = f"{out}/bench.jsonl"
bench = [json.loads(line) for line in open(bench_file) if line.strip()] if os.path.exists(bench_file) else []
def torch_ips(precision):
    v = [e["row"]["images_per_s"] for e in bench if e["row"]["implementation"] == "pytorch"
         and e["row"]["mode"] == "train" and e["precision"] == precision
         and e["row"].get("optimizer") == "fused"]
    return max(v) if v else float("nan")
# Not like for like: `train` adds the recipe's SSIM term and data loading to bench's L1 step.
print("| precision | steps | first loss | last loss | finite, decreasing | Rust `train` img/s (L1 + SSIM, loader) "
      "| PyTorch AMP img/s (bench, L1) | val PSNR dB |")
print("|---|---|---|---|---|---|---|---|")
all_ok = True
for p in ["fp32", "bf16", "fp16"]:
    tb = {}
    if os.path.isdir(f"{out}/smoke-logs/smoke-{p}"):
        ea = EventAccumulator(f"{out}/smoke-logs/smoke-{p}", size_guidance={"scalars": 0})
        ea.Reload()
        tb = {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    if "train/loss" not in tb:
        print(f"| {p} | FAILED (smoke-{p}.log) | | | | | | |")
        all_ok = False
        continue
    loss = [v for _, v in tb["train/loss"]]
    ips = [v for _, v in tb["train/images_per_s"]][1:]  # the first interval holds warm-up
    psnr = tb["val/psnr"][-1][1] if "val/psnr" in tb else float("nan")
    ok = all(math.isfinite(v) for v in loss) and loss[-1] < loss[0]
    all_ok = all_ok and ok
    print(f"| {p} | {tb['train/loss'][-1][0]} | {loss[0]:.4f} | {loss[-1]:.4f} | {'yes' if ok else 'NO'} "
          f"| {sum(ips) / max(len(ips), 1):.2f} | {torch_ips(p):.2f} | {psnr:.2f} |")
sys.exit(0 if all_ok else 1)
PY
    cat "$OUTDIR/train-smoke.md"
    return "$failed"
}

dist_smoke() {
    local port=$((29500 + RANDOM % 1000))
    # A hang (NCCL in a sandbox, say) must not eat the time of the stages after it.
    if PROMPTIR_DIST_TIMEOUT=60 timeout -k 30 180 \
        "$PYTHON" -m torch.distributed.run --no-python --nproc-per-node 1 --master-port "$port" \
        "$BIN" train "${smoke_train_args[@]}" --name smoke-dist --set train.max_steps=4 \
        >"$OUTDIR/dist-smoke.txt" 2>&1; then
        echo "ok: 4 steps in a process group of 1 ($backend)" >>"$OUTDIR/dist-smoke.txt"
    else
        echo "FAILED" >>"$OUTDIR/dist-smoke.txt"
        tail -n 3 "$OUTDIR/dist-smoke.txt"
        return 1
    fi
    tail -n 3 "$OUTDIR/dist-smoke.txt"
}

profile_step() {
    IFS=: read -r _ prof_size prof_batch _ <<<"${rows%% *}"
    local prof_iters=$((iters < 3 ? iters : 3)) # a trace of every op is large: a few steps tell it all
    if "$BIN" bench --config "$config" --mode train --size "$prof_size" --batch "$prof_batch" --precision bf16 \
        --device "$device" --iters "$prof_iters" --warmup "$warmup" "${thread_args[@]}" \
        --profile "$OUTDIR/profile-train-bf16.json" --json >/dev/null 2>"$OUTDIR/profile-train-bf16.log" &&
        "$PYTHON" scripts/profile_table.py "$OUTDIR/profile-train-bf16.json" --iters "$prof_iters" --top 20 \
            >"$OUTDIR/profile-train-bf16.md"; then
        cat "$OUTDIR/profile-train-bf16.md"
    else
        { echo "profile FAILED:"; tail -n 20 "$OUTDIR/profile-train-bf16.log"; } >"$OUTDIR/profile-train-bf16.md"
        cat "$OUTDIR/profile-train-bf16.md"
        return 1
    fi
}

both_layouts() {
    : >"$OUTDIR/layouts.jsonl"
    local row mode size batch precision layout line
    for row in $rows; do
        IFS=: read -r mode size batch precision <<<"$row"
        precision=${precision:-fp32}
        # fp32 and bf16 (a GPU's natural precision, where cuDNN's NHWC kernels matter most).
        [[ $precision == fp16 || $mode == optim ]] && continue
        for layout in contiguous channels-last; do
            line=$("$BIN" bench --config "$config" --mode "$mode" --size "$size" --batch "$batch" \
                --precision "$precision" --device "$device" --iters "$iters" --warmup "$warmup" \
                --layout "$layout" "${thread_args[@]}" --json | tail -n1) ||
                return 1
            echo "$line" >>"$OUTDIR/layouts.jsonl"
        done
    done
    "$PYTHON" - "$OUTDIR/layouts.jsonl" >"$OUTDIR/layouts.md" <<'PY' || return 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def mib(v):  # null: no VmHWM in this kernel, or no CUDA
    return "-" if v is None else f"{v:.0f}"
print("| mode | size | batch | precision | device | layout | median ms | min ms | img/s | peak RSS MiB "
      "| CUDA reserved MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['mode']} | {r['size']}x{r['size']} | {r['batch']} | {r['precision']} | {r['device']} | {r['layout']} "
          f"| {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['images_per_s']:.2f} | {mib(r['peak_rss_mib'])} "
          f"| {mib(r['cuda_reserved_mib'])} |")
PY
    cat "$OUTDIR/layouts.md"
}

section() { # title file [fenced]
    echo "## $1"
    echo
    [[ -n ${3:-} ]] && echo '```'
    if [[ -f $OUTDIR/$2 ]]; then cat "$OUTDIR/$2"; else echo "(not run)"; fi
    [[ -n ${3:-} ]] && echo '```'
    echo
}

write_summary() {
    {
        echo "# promptir gpu-check"
        echo
        echo '```'
        cat "$OUTDIR/env.txt"
        echo
        cat "$OUTDIR/doctor.txt"
        echo '```'
        echo
        section "Stages" stages.md
        section "Rust vs PyTorch" bench.md
        section "Training smoke" train-smoke.md
        section "Data-parallel smoke" dist-smoke.txt fenced
        section "Where a bf16 training step spends its time (profile-train-bf16.json in Perfetto for the timeline)" \
            profile-train-bf16.md
        section "Rust activation layouts" layouts.md
        section "The other networks: Rust vs PyTorch" zoo.md
        echo "CUDA reserved = device memory in use after the row minus before the model was built"
        echo "(the caching allocator's peak reservation; tch does not expose max_memory_allocated)."
    } >"$OUTDIR/summary.md.tmp"
    mv "$OUTDIR/summary.md.tmp" "$OUTDIR/summary.md"
}

failed_stages=()
stage() { # name function: run it, time it, record it, refresh the summary
    local name=$1 t0=$SECONDS status=ok
    step "$name"
    "$2" || { status=FAILED; failed_stages+=("$name"); }
    echo "| $name | $status | $((SECONDS - t0)) |" >>"$OUTDIR/stages.md"
    write_summary
}

backend=$([[ $device == cuda ]] && echo NCCL || echo Gloo)
# A rerun into the same folder starts clean (synth and train never overwrite), and its summary
# is this run's from the start (a rerun cut short must not leave the last one's).
rm -rf "$OUTDIR"/{bench,layouts,zoo}.{jsonl,md} "$OUTDIR"/{train-smoke,profile-train-bf16}.md \
    "$OUTDIR/dist-smoke.txt" "$OUTDIR"/smoke-{data,logs,weights}
printf '| stage | result | seconds |\n|---|---|---:|\n' >"$OUTDIR/stages.md"
write_summary
# Most wanted first: the speed rows and the training smoke are the GPU targets.
stage "bench: Rust vs PyTorch on $device" bench_rows
stage "training smoke: $smoke_steps steps of $smoke_exp at patch $smoke_patch, batch $smoke_batch" train_smoke
stage "data-parallel smoke: torchrun, one process ($backend)" dist_smoke
stage "profile: a bf16 training step" profile_step
stage "Rust in both activation layouts" both_layouts
stage "the other networks: Rust vs PyTorch on $device" zoo_bench
step "wrote $OUTDIR/summary.md"
if [[ ${#failed_stages[@]} -gt 0 ]]; then
    printf 'gpu-check: FAILED: %s\n' "${failed_stages[@]}" >&2
    echo "gpu-check: see $OUTDIR/summary.md" >&2
    exit 1
fi
