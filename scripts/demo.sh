#!/usr/bin/env bash
# make demo: synthetic rain/snow set -> tiny PromptIR trained on CPU -> eval -> pred.npz with TTA ->
# comparison panels. Everything lands in demo/ (DEMO_DIR), which each run replaces.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/promptir}
OUT=${DEMO_DIR:-demo}
EPOCHS=${DEMO_EPOCHS:-40}
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 2; }
# Replace only a folder this script made before.
if [ -e "$OUT" ]; then
  [ -f "$OUT/.promptir-demo" ] || { echo "$OUT exists and is not a demo folder; set DEMO_DIR" >&2; exit 2; }
  rm -rf "$OUT"
fi
mkdir -p "$OUT" && touch "$OUT/.promptir-demo"
step() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)

step "1/5 synthetic data: 160 train pairs + 12 test images, 128x128 ($OUT/data)"
"$BIN" synth --output "$OUT/data" --train 160 --test 12 --size 128 --seed 0

step "2/5 training the tiny PromptIR on CPU for $EPOCHS epochs (experiments/tiny.yaml)"
"$BIN" train --config experiments/tiny.yaml --data "$OUT/data" --name demo \
  --logs-dir "$OUT/logs" --weights-dir "$OUT/weights" --set train.epochs="$EPOCHS" --device cpu
W="$OUT/weights/demo/best.safetensors"

step "3/5 PSNR before (input) and after (restored) on the synthetic test set"
"$BIN" eval --weights "$W" --data "$OUT/data" --split test --device cpu --quiet \
  --output "$OUT/eval_test.json"

step "4/5 pred.npz with TTA over the views training used ($OUT/pred.npz)"
"$BIN" predict --weights "$W" --input "$OUT/data/test/degraded" --output "$OUT/pred.npz" --tta auto \
  --png-dir "$OUT/pred" --device cpu
.venv/bin/python scripts/check_pred.py "$OUT/pred.npz" --png-dir "$OUT/pred" >"$OUT/pred_check.json"
.venv/bin/python - "$OUT/pred_check.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
shapes = sorted({tuple(e["shape"]) for e in c["entries"].values()})
dtypes = sorted({e["dtype"] for e in c["entries"].values()})
print(f"numpy reads {len(c['keys'])} keys ({c['keys'][0]} ...), dtype {dtypes}, shapes {shapes}, "
      f"all equal to the PNGs: {all(c['png_equal'].values())}")
PY

step "5/5 comparison panels: degraded | restored | clean ($OUT/panels)"
"$BIN" visualize --weights "$W" --data "$OUT/data" --split test --device cpu \
  --quiet --output "$OUT/panels" --count 6

cat <<MSG

Done in $(( $(date +%s) - t0 )) s. Where things are:
  data          $OUT/data            (promptir synth; course layout + test ground truth)
  weights       $OUT/weights/demo/   (best/last .safetensors, train_state.json)
  curves        $OUT/logs/demo/      (open with: .venv/bin/tensorboard --logdir $OUT/logs)
  scores        $OUT/eval_test.json  (promptir eval ... --tta-compare for TTA per type)
  submission    $OUT/pred.npz        (+ PNGs in $OUT/pred)
  panels        $OUT/panels/overview.png
MSG
