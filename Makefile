# promptir: thin wrappers over cargo and the promptir binary. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BIN      := target/release/promptir
EXP      ?= experiments/combined_loss.yaml
DATA     ?= data/hw4_realse_dataset
WEIGHTS  ?=
INPUT    ?= $(DATA)/test/degraded
OUTPUT   ?= pred.npz
DEVICE   ?= auto
NPROC    ?= 1
ARGS     ?=
export CARGO_TERM_COLOR ?= never
# Lints with tch's doc-only feature: the same Rust code is checked, but torch-sys's build script
# skips its C++ wrapper, which cargo would otherwise compile twice (check and build runs of a
# build script are separate units; ~3 minutes each on 2 cores).
CLIPPY   := cargo clippy --all-targets --features doc-only -- -D warnings

.PHONY: help setup build test lint fmt-check clippy ruff fmt doctor train predict eval demo ablation tools-ablation zoo tensorboard bench bench-dist gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## create ./.venv with torch 2.11.0 (libtorch) and the test references; idempotent
	@bash scripts/setup.sh

build: setup ## build the release binary
	cargo build --release

# The test harness runs tests side by side (one per core), and most of them run libtorch, in
# process or in the binary they start: one intra-op thread each keeps the cores busy with work
# rather than with OpenMP threads spinning against each other (on 2 cores: 276 -> 133 s).
TORCH_THREADS_PER_TEST ?= 1
# Clippy (doc-only) needs no libtorch, so `test` runs it while setup downloads torch (-j2):
# on a clean clone that hides most of clippy's 3 minutes behind pip's.
test: ## everything CI runs: fmt, clippy, ruff, all tests
	$(MAKE) --no-print-directory -j2 lint
	OMP_NUM_THREADS=$(TORCH_THREADS_PER_TEST) cargo test

lint: fmt-check clippy ruff ## fmt + clippy on the Rust, ruff on the Python in scripts/

fmt-check:
	cargo fmt --check

clippy:
	$(CLIPPY)

ruff: setup
	.venv/bin/ruff check scripts

fmt: ## format the code
	cargo fmt

doctor: build ## libtorch / CUDA / cuDNN / threads
	$(BIN) doctor

train: build ## make train EXP=experiments/combined_loss.yaml DATA=path/to/hw4_realse_dataset [NPROC=4]
ifeq ($(NPROC),1)
	$(BIN) train --config $(EXP) --data $(DATA) --device $(DEVICE) $(ARGS)
else
	.venv/bin/torchrun --no-python --nproc-per-node $(NPROC) $(BIN) train --config $(EXP) --data $(DATA) --device $(DEVICE) $(ARGS)
endif

predict: build ## make predict WEIGHTS="a.safetensors b.safetensors" INPUT=dir OUTPUT=pred.npz
	@test -n "$(WEIGHTS)" || { echo "set WEIGHTS=path/to/best.safetensors (several for an ensemble)"; exit 2; }
	$(BIN) predict $(foreach w,$(WEIGHTS),--weights $(w)) --input $(INPUT) --output $(OUTPUT) --tta auto --device $(DEVICE) $(ARGS)

eval: build ## make eval WEIGHTS=... DATA=...
	@test -n "$(WEIGHTS)" || { echo "set WEIGHTS=path/to/best.safetensors"; exit 2; }
	$(BIN) eval $(foreach w,$(WEIGHTS),--weights $(w)) --data $(DATA) --device $(DEVICE) $(ARGS)

demo: build ## synthetic data -> tiny training -> eval -> pred.npz -> comparison PNG (CPU, minutes)
	bash scripts/demo.sh

ablation: build ## rebuild the report's ablation table (ABLATION_SCALE=tiny|paper, SEEDS=n runs each)
	$(if $(SEEDS),SEEDS=$(SEEDS)) bash scripts/ablation.sh

tools-ablation: build ## EMA, augmentations, losses, progressive patches at the tiny scale (SEEDS=n, default 2)
	$(if $(SEEDS),SEEDS=$(SEEDS)) bash scripts/tools_ablation.sh

zoo: build ## every tiny network, same data and steps: parameters, MACs, speed vs PyTorch, test PSNR/SSIM (STEPS=n)
	$(if $(STEPS),STEPS=$(STEPS)) bash scripts/zoo.sh

tensorboard: setup ## TensorBoard on logs/
	.venv/bin/tensorboard --logdir logs --bind_all

bench: build ## Rust vs PyTorch on the same libtorch
	bash scripts/bench.sh $(ARGS)

bench-dist: build ## 2 processes x 1 thread against 1 process x 2 threads, bucketed all-reduce or not
	bash scripts/bench_dist.sh $(ARGS)

gpu-check: build ## run scripts/gpu-check.sh with the local torch
	bash scripts/gpu-check.sh $(BIN) .venv/torch/lib gpu-check-out

clean: ## remove build outputs (keeps .venv, weights/, logs/)
	cargo clean
