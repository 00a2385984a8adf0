#!/usr/bin/env bash
# The report's ablation (`make ablation`): trains L1 only, the combined loss (patch 224 / batch 2)
# and patch 160 / batch 4, evaluates each and the ensemble of the last two with and without TTA,
# then writes results/ablation.md, results/ablation.json and the figures results/fig{1,2,3}_*.png.
#
#   ABLATION_SCALE=tiny   tiny network, short schedule, synthetic data: minutes on a laptop CPU
#                         (the default when `promptir doctor` finds no CUDA)
#   ABLATION_SCALE=paper  experiments/{l1_only,combined_loss,patch160_bs4}.yaml on $DATA (GPU)
#
# Other knobs: DATA (paper data, default data/hw4_realse_dataset), DEVICE (default cpu for tiny,
# auto for paper), EVAL_SPLIT (test when $DATA/test/clean exists, else val), ABLATION_VGG=0
# (tiny: leave the VGG term off even when weights/vgg16.safetensors exists), ABLATION_SET (extra
# space-separated key=value overrides for every training, e.g. "train.epochs=12"), PROMPTIR (binary).
#
#   SEEDS=n   trains and evaluates every experiment n times, with seeds SEED0, SEED0+1, ...
#             (`--set seed=N`; SEED0 default 42, base.yaml's seed) as runs <experiment>_s<seed>;
#             the report shows mean ± sample std. The ensemble is of the first seed's runs.
#             Default 1: one run per experiment with its file's seed, named <experiment>.
#
# Every call makes a new session folder results/ablation/<scale>-<UTC time>/ (logs, weights,
# evals, report) and never writes into an earlier one; results/ablation.md etc. are then
# rebuilt from the new session.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PROMPTIR:-target/release/promptir}
die() { echo "ablation: $*" >&2; exit 2; }
[ -x "$BIN" ] || die "$BIN not found; run 'make build' (or set PROMPTIR=path/to/promptir)"
for cmd in train eval report; do
    "$BIN" "$cmd" --help >/dev/null 2>&1 || die "this promptir has no '$cmd' command; rebuild from an up-to-date main"
done

SEEDS=${SEEDS:-1}
SEED0=${SEED0:-42}
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || die "SEEDS must be a positive whole number, got '$SEEDS'"
[[ "$SEED0" =~ ^[0-9]+$ ]] || die "SEED0 must be a whole number >= 0, got '$SEED0'"

doctor=$("$BIN" doctor)
if grep -Eq '^cuda available +true' <<<"$doctor"; then has_cuda=1; else has_cuda=0; fi
SCALE=${ABLATION_SCALE:-$([ "$has_cuda" = 1 ] && echo paper || echo tiny)}
VGG=weights/vgg16.safetensors
notes=()

case "$SCALE" in
tiny)
    DEVICE=${DEVICE:-cpu}
    # Synthetic data, shared by sessions (same seed, same bytes); made once, atomically.
    SYNTH_ARGS=(--train 400 --test 40 --size 128 --seed 0)
    DATA=results/ablation/synth-400-40-128-s0
    if [ ! -d "$DATA/test/clean" ]; then
        "$BIN" synth --help >/dev/null 2>&1 || die "this promptir has no 'synth' command; rebuild from an up-to-date main"
        rm -rf "$DATA.partial"
        "$BIN" synth --output "$DATA.partial" "${SYNTH_ARGS[@]}"
        mv "$DATA.partial" "$DATA"
    fi
    L1=(tiny_l1_only experiments/tiny_l1_only.yaml)
    COMBINED=(tiny_combined experiments/tiny.yaml)
    PATCH=(tiny_patch48_bs16 experiments/tiny_patch48_bs16.yaml)
    extra=()
    if [ -f "$VGG" ] && [ "${ABLATION_VGG:-1}" != 0 ]; then
        extra=(--set loss.perceptual=0.05)
        notes+=("Tiny scale: the combined rows add the paper's 0.05 VGG16 perceptual term ($VGG).")
    else
        notes+=("Tiny scale: the combined rows use L1 + 0.2 SSIM without the paper's 0.05 VGG16 perceptual term, because $VGG is missing (or ABLATION_VGG=0); export it with scripts/export_vgg16.py on a machine with internet.")
    fi
    notes+=("Tiny scale: synthetic data (\`promptir synth ${SYNTH_ARGS[*]}\`), the tiny network and a short schedule; it checks the pipeline end to end, its numbers are not the paper's. Patch/batch rows: 48x48x16 = 36,864 pixels per step against 64x64x8 = 32,768 (paper: 160x160x4 against 224x224x2).")
    ;;
paper)
    DEVICE=${DEVICE:-auto}
    DATA=${DATA:-data/hw4_realse_dataset}
    [ -d "$DATA/train" ] || die "$DATA/train not found; set DATA=path/to/hw4_realse_dataset"
    [ -f "$VGG" ] || die "$VGG missing: the combined loss needs it; run scripts/export_vgg16.py on a machine with internet"
    [ "$has_cuda" = 1 ] || echo "ablation: warning: no CUDA; the paper recipe takes days on a CPU" >&2
    L1=(l1_only experiments/l1_only.yaml)
    COMBINED=(combined_loss experiments/combined_loss.yaml)
    PATCH=(patch160_bs4 experiments/patch160_bs4.yaml)
    extra=()
    ;;
*) die "ABLATION_SCALE must be tiny or paper, got '$SCALE'" ;;
esac

if [ -z "${EVAL_SPLIT:-}" ]; then
    if [ -d "$DATA/test/clean" ]; then EVAL_SPLIT=test; else EVAL_SPLIT=val; fi
fi
if [ "$EVAL_SPLIT" = val ]; then
    notes+=("No test ground truth in $DATA: the eval columns score the held-out validation split, the same images that chose the best checkpoint (slightly optimistic).")
fi

SESSION=results/ablation/$SCALE-$(date -u +%Y%m%d-%H%M%S)
while [ -e "$SESSION" ]; do SESSION=$SESSION-x; done
LOGS=$SESSION/logs
WEIGHTS=$SESSION/weights
mkdir -p "$LOGS" "$WEIGHTS" "$SESSION/evals"
echo "ablation: $SCALE scale, data $DATA, device $DEVICE, eval split $EVAL_SPLIT -> $SESSION"
t0=$SECONDS
stamp() { echo "ablation: [$((SECONDS - t0)) s] $*"; }

sets=()
for kv in ${ABLATION_SET:-}; do sets+=(--set "$kv"); done
[ ${#sets[@]} -eq 0 ] || notes+=("Overrides for every run: ${ABLATION_SET}.")

train() { # name experiment [--set ...]
    local name=$1 exp=$2
    shift 2
    stamp "train $name ($exp)"
    "$BIN" train --config "$exp" --data "$DATA" --device "$DEVICE" --name "$name" \
        --logs-dir "$LOGS" --weights-dir "$WEIGHTS" --quiet "${sets[@]}" "$@"
    [ -f "$LOGS/$name/config.yaml" ] || die "run $name did not appear under $LOGS"
}

evaluate() { # output-stem weights...
    local out=$1
    shift
    local w=()
    for f in "$@"; do w+=(--weights "$f"); done
    for tta in "" _tta; do
        stamp "eval ${out}_${EVAL_SPLIT}${tta}.json"
        "$BIN" eval "${w[@]}" --data "$DATA" --split "$EVAL_SPLIT" --device "$DEVICE" \
            ${tta:+--tta auto} --format json --output "${out}_${EVAL_SPLIT}${tta}.json"
    done
}

seeds=()
for ((k = 0; k < SEEDS; k++)); do seeds+=($((SEED0 + k))); done
# With one seed the runs keep the experiment's name and its file's seed (as before SEEDS).
run_name() { if [ "$SEEDS" = 1 ]; then echo "$1"; else echo "$1_s$2"; fi; }
if [ "$SEEDS" != 1 ]; then
    notes+=("Seeds: $SEEDS per experiment (${seeds[*]}, \`--set seed=N\`), runs named <experiment>_s<seed>; the ensemble is of the first seed's runs.")
fi

# Seed by seed, so that an interrupted session still holds whole ablations.
for s in "${seeds[@]}"; do
    seed=()
    [ "$SEEDS" = 1 ] || seed=(--set "seed=$s")
    train "$(run_name "${L1[0]}" "$s")" "${L1[1]}" "${seed[@]}"
    train "$(run_name "${COMBINED[0]}" "$s")" "${COMBINED[1]}" "${extra[@]}" "${seed[@]}"
    train "$(run_name "${PATCH[0]}" "$s")" "${PATCH[1]}" "${extra[@]}" "${seed[@]}"
done
runs=()
for exp in "${L1[0]}" "${COMBINED[0]}" "${PATCH[0]}"; do
    for s in "${seeds[@]}"; do
        name=$(run_name "$exp" "$s")
        evaluate "$LOGS/$name/eval" "$WEIGHTS/$name/best.safetensors"
        runs+=("$LOGS/$name")
    done
done
c0=$(run_name "${COMBINED[0]}" "${seeds[0]}")
p0=$(run_name "${PATCH[0]}" "${seeds[0]}")
evaluate "$SESSION/evals/ensemble" "$WEIGHTS/$c0/best.safetensors" "$WEIGHTS/$p0/best.safetensors"

note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
note_args+=(--note "Session: $SESSION ($((SECONDS - t0)) s).")
for out in "$SESSION/report" results; do
    "$BIN" report "${runs[@]}" --evals "$SESSION/evals" --split "$EVAL_SPLIT" --output "$out" "${note_args[@]}"
done
stamp "done: results/ablation.md, results/fig{1,2,3}_*.png (this session's copy: $SESSION/report)"
