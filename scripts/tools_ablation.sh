#!/usr/bin/env bash
# The training tools measured at the tiny scale (`make tools-ablation`): with the same number of
# steps, on the synthetic set `make ablation` uses, each variant of experiments/tiny.yaml is
# trained with SEEDS seeds (default 2) and scored on the test split without TTA; the table
# (results/tools/ablation.md, mean ± std over the seeds) and the TTA comparison of two runs
# (results/tools/tta_*.txt) are what the README's "Training tools at the tiny scale" quotes.
#
# Variants: the reference (tiny.yaml: the report's augmentations, L1 + 0.2 SSIM); + EMA (decay
# 0.99: a horizon of ~100 of the 270 steps); flips and quarter turns instead of the report's
# augmentations; L1 alone, and L1 plus each new loss; progressive patches at the same pixels per
# step (32 px x 32 for 6 epochs, 48 x 14 for 4, then 64 x 8) cut to the same 270 steps.
#
# Knobs: SEEDS, SEED0 (42), PROMPTIR (binary, default target/release/promptir), OUT
# (results/tools).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PROMPTIR:-target/release/promptir}
die() { echo "tools-ablation: $*" >&2; exit 2; }
[ -x "$BIN" ] || die "$BIN not found; run 'make build' (or set PROMPTIR=path/to/promptir)"
SEEDS=${SEEDS:-2}
SEED0=${SEED0:-42}
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || die "SEEDS must be a positive whole number, got '$SEEDS'"
[[ "$SEED0" =~ ^[0-9]+$ ]] || die "SEED0 must be a whole number >= 0, got '$SEED0'"
OUT=${OUT:-results/tools}

DATA=results/ablation/synth-400-40-128-s0 # the same bytes as make ablation's
if [ ! -d "$DATA/test/clean" ]; then
    rm -rf "$DATA.partial"
    "$BIN" synth --output "$DATA.partial" --train 400 --test 40 --size 128 --seed 0
    mv "$DATA.partial" "$DATA"
fi
SESSION=$OUT/session-$(date -u +%Y%m%d-%H%M%S)
while [ -e "$SESSION" ]; do SESSION=$SESSION-x; done
mkdir -p "$SESSION"
t0=$SECONDS
stamp() { echo "tools-ablation: [$((SECONDS - t0)) s] $*"; }

# name | experiment | overrides (space-separated key=value, no spaces inside a value: JSON)
VARIANTS=(
    "reference|experiments/tiny.yaml|"
    "ema|experiments/tiny.yaml|train.ema.decay=0.99"
    "flips_rot90|experiments/tiny_flips_rot90.yaml|"
    "l1|experiments/tiny_l1_only.yaml|"
    "l1_charbonnier|experiments/tiny_l1_only.yaml|loss.charbonnier=1.0"
    "l1_edge|experiments/tiny_l1_only.yaml|loss.edge=0.05"
    "l1_fft|experiments/tiny_l1_only.yaml|loss.fft=0.1"
    "l1_psnr|experiments/tiny_l1_only.yaml|loss.psnr=0.01"
    "progressive|experiments/tiny.yaml|train.epochs=13 train.max_steps=270 train.stages=[{\"until_epoch\":6,\"patch_size\":32,\"batch_size\":32},{\"until_epoch\":10,\"patch_size\":48,\"batch_size\":14},{\"until_epoch\":13,\"patch_size\":64,\"batch_size\":8}]"
)

runs=()
for ((k = 0; k < SEEDS; k++)); do
    seed=$((SEED0 + k))
    for v in "${VARIANTS[@]}"; do
        IFS='|' read -r name exp overrides <<<"$v"
        run=${name}_s$seed
        sets=(--set "seed=$seed")
        read -ra kvs <<<"$overrides" # split on spaces only: no glob expansion of [...]
        for kv in "${kvs[@]}"; do sets+=(--set "$kv"); done
        stamp "train $run"
        "$BIN" train --config "$exp" --data "$DATA" --device cpu --name "$run" \
            --logs-dir "$SESSION/logs" --weights-dir "$SESSION/weights" --quiet "${sets[@]}"
        stamp "eval $run"
        "$BIN" eval --weights "$SESSION/weights/$run/best.safetensors" --data "$DATA" --split test \
            --device cpu --tta off --format json --output "$SESSION/logs/$run/eval_test.json" >/dev/null
        runs+=("$SESSION/logs/$run")
    done
done

# What each TTA set does per type, for a model trained with hflip only (the reference) and one
# trained with all eight views (flips_rot90).
for name in reference flips_rot90; do
    stamp "tta-compare $name"
    "$BIN" eval --weights "$SESSION/weights/${name}_s$SEED0/best.safetensors" --data "$DATA" \
        --split test --device cpu --tta-compare >"$SESSION/tta_$name.txt"
done
"$BIN" report "${runs[@]}" --split test --output "$SESSION/report" \
    --note "Tiny scale, synthetic data (promptir synth --train 400 --test 40 --size 128 --seed 0), 270 steps each, test split without TTA; seeds $SEED0.. ($SEEDS). Variants: scripts/tools_ablation.sh."
mkdir -p "$OUT"
cp "$SESSION"/report/* "$SESSION"/tta_*.txt "$OUT"/
stamp "done: $OUT/ablation.md, $OUT/tta_*.txt (session $SESSION)"
