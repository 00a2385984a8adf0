#!/usr/bin/env bash
# Every tiny network side by side (`make zoo`): on the synthetic set `make ablation` uses, each
# experiments/tiny_<arch>.yaml that exists (PromptIR: experiments/tiny.yaml) is trained for the
# same STEPS steps with the same seed, scored on the test split without TTA, and measured beside
# its PyTorch reference by scripts/bench.sh (one training row, one inference row); then
# `promptir report` draws the runs' curves and scripts/zoo_table.py writes results/zoo/zoo.md:
# parameters, MACs at 256x256 (PyTorch's FlopCounterMode on scripts/reference/), training step
# and inference time and their ratios to PyTorch, test PSNR/SSIM per degradation type, and the
# paper configs' parameters and MACs. The README's "Every network at the tiny scale" quotes it.
#
# Knobs: STEPS (270: tiny.yaml's 6 epochs of 45 steps; train.epochs becomes ceil(STEPS / 45)
# so that the cosine schedule ends with the run), SEED (42), BENCH_ROWS ("train:64:1
# infer:256:1", scripts/bench.sh rows), BENCH_REPS (2), BENCH_ITERS (10), BENCH_THREADS (libtorch
# threads of the bench rows; default libtorch's, all cores), PAPER_MACS (1; 0 skips the paper
# configs' MACs, ~20 s of CPU), ZOO_SET (extra space-separated key=value overrides for
# every training), PROMPTIR (binary, default target/release/promptir), PYTHON (.venv/bin/python),
# OUT (results/zoo).
#
# Every call makes a new session folder $OUT/session-<UTC time>/ (logs, weights, evals, bench
# rows, report); the table and figures are then copied to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PROMPTIR:-target/release/promptir}
PYTHON=${PYTHON:-.venv/bin/python}
die() { echo "zoo: $*" >&2; exit 2; }
[ -x "$BIN" ] || die "$BIN not found; run 'make build' (or set PROMPTIR=path/to/promptir)"
[ -x "$PYTHON" ] || die "$PYTHON not found; run 'make setup' (or set PYTHON=path/to/python)"
STEPS=${STEPS:-270}
SEED=${SEED:-42}
BENCH_ROWS=${BENCH_ROWS:-train:64:1 infer:256:1}
BENCH_REPS=${BENCH_REPS:-2}
BENCH_ITERS=${BENCH_ITERS:-10}
BENCH_THREADS=${BENCH_THREADS:-}
PAPER_MACS=${PAPER_MACS:-1}
OUT=${OUT:-results/zoo}
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "STEPS must be a positive whole number, got '$STEPS'"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a whole number >= 0, got '$SEED'"
[[ "$BENCH_REPS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive whole number, got '$BENCH_REPS'"
[[ "$BENCH_ITERS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ITERS must be a positive whole number, got '$BENCH_ITERS'"
[[ -z "$BENCH_THREADS" || "$BENCH_THREADS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_THREADS must be a positive whole number or empty, got '$BENCH_THREADS'"
[[ "$PAPER_MACS" =~ ^[01]$ ]] || die "PAPER_MACS must be 0 or 1, got '$PAPER_MACS'"

# The networks, in table order; those without a tiny experiment yet are left out.
ARCHS=(promptir restormer nafnet adair moce_ir)
nets=() exps=()
for arch in "${ARCHS[@]}"; do
    if [ "$arch" = promptir ]; then exp=experiments/tiny.yaml; else exp=experiments/tiny_$arch.yaml; fi
    if [ -f "$exp" ]; then
        nets+=("$arch")
        exps+=("$exp")
    fi
done
[ ${#nets[@]} -gt 0 ] || die "no tiny experiment found (experiments/tiny.yaml, experiments/tiny_<arch>.yaml)"

SYNTH_ARGS=(--train 400 --test 40 --size 128 --seed 0)
DATA=results/ablation/synth-400-40-128-s0 # the same bytes as make ablation's
if [ ! -d "$DATA/test/clean" ]; then
    rm -rf "$DATA.partial"
    "$BIN" synth --output "$DATA.partial" "${SYNTH_ARGS[@]}"
    mv "$DATA.partial" "$DATA"
fi
SESSION=$OUT/session-$(date -u +%Y%m%d-%H%M%S)
while [ -e "$SESSION" ]; do SESSION=$SESSION-x; done
mkdir -p "$SESSION/bench"
t0=$SECONDS
stamp() { echo "zoo: [$((SECONDS - t0)) s] $*"; }
stamp "${nets[*]}: $STEPS steps each, seed $SEED, data $DATA -> $SESSION"

# 45 steps per epoch: the 360 training pairs left after tiny.yaml's validation split, batch 8.
EPOCHS=$(((STEPS + 44) / 45))
sets=(--set "seed=$SEED" --set "train.max_steps=$STEPS" --set "train.epochs=$EPOCHS")
extra=()
for kv in ${ZOO_SET:-}; do extra+=(--set "$kv"); done

runs=()
printf 'network\ttrain_s\n' >"$SESSION/train_seconds.tsv"
for i in "${!nets[@]}"; do
    run=${nets[$i]} exp=${exps[$i]}
    stamp "train $run ($exp)"
    t=$SECONDS
    "$BIN" train --config "$exp" --data "$DATA" --device cpu --name "$run" \
        --logs-dir "$SESSION/logs" --weights-dir "$SESSION/weights" --quiet "${sets[@]}" "${extra[@]}"
    printf '%s\t%s\n' "$run" "$((SECONDS - t))" >>"$SESSION/train_seconds.tsv"
    stamp "eval $run"
    "$BIN" eval --weights "$SESSION/weights/$run/best.safetensors" --data "$DATA" --split test \
        --device cpu --tta off --format json --output "$SESSION/logs/$run/eval_test.json" >/dev/null
    runs+=("$SESSION/logs/$run")
done

# One process per implementation and repetition, after all training, so that no row shares
# the CPU with a training run.
threads=()
[ -z "$BENCH_THREADS" ] || threads=(--threads "$BENCH_THREADS")
for i in "${!nets[@]}"; do
    run=${nets[$i]} exp=${exps[$i]}
    stamp "bench $run ($BENCH_ROWS, $BENCH_REPS repetitions)"
    if ! BIN=$BIN PYTHON=$PYTHON bash scripts/bench.sh --config "$exp" --rows "$BENCH_ROWS" \
        --reps "$BENCH_REPS" --iters "$BENCH_ITERS" "${threads[@]}" --out "$SESSION/bench/$run.jsonl" \
        >"$SESSION/bench/$run.md" 2>"$SESSION/bench/$run.log"; then
        tail -n 20 "$SESSION/bench/$run.log" >&2
        die "scripts/bench.sh failed for $run (log: $SESSION/bench/$run.log)"
    fi
done

command="STEPS=$STEPS SEED=$SEED BENCH_REPS=$BENCH_REPS BENCH_ITERS=$BENCH_ITERS scripts/zoo.sh"
[ -z "$BENCH_THREADS" ] || command="BENCH_THREADS=$BENCH_THREADS $command"
[ "$BENCH_ROWS" = "train:64:1 infer:256:1" ] || command="BENCH_ROWS='$BENCH_ROWS' $command"
[ -z "${ZOO_SET:-}" ] || command="ZOO_SET='$ZOO_SET' $command"
stamp "report"
"$BIN" report "${runs[@]}" --split test --output "$SESSION/report" \
    --note "Every tiny network on the same synthetic data (\`promptir synth ${SYNTH_ARGS[*]}\`), $STEPS steps each (train.epochs=$EPOCHS), seed $SEED, test split without TTA: scripts/zoo.sh, zoo.md." \
    >/dev/null
paper=()
[ "$PAPER_MACS" = 1 ] || paper=(--no-paper)
stamp "table (MACs counted with PyTorch)"
"$PYTHON" scripts/zoo_table.py --session "$SESSION" --nets "${nets[@]}" --steps "$STEPS" \
    --seed "$SEED" --data "promptir synth ${SYNTH_ARGS[*]}" --command "$command" "${paper[@]}" \
    --output "$SESSION/report/zoo.md"
cp "$SESSION"/report/* "$OUT"/
stamp "done: $OUT/zoo.md, $OUT/fig3_val_psnr.png (session $SESSION)"
