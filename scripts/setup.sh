#!/usr/bin/env bash
# Idempotent: creates ./.venv with the pinned libtorch (PyPI torch 2.11.0) and the
# Python packages the tests use for reference values. Does nothing when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
REQ=scripts/requirements.txt
stamp="$VENV/.promptir-setup-$(sha1sum "$REQ" | cut -c1-12)"
if [ -f "$stamp" ] && [ -e "$VENV/torch/lib/libtorch.so" ]; then
  exit 0
fi
echo "setup: creating $VENV (torch 2.11.0, about 4.6 GB, a minute or two)" >&2
# torch's CUDA wheels unpack to ~5 GB and a test build adds ~6 GB: say so up front rather than
# let pip or the linker die half-way with ENOSPC.
free_mb=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1024 ))
if [ "$free_mb" -lt 6144 ]; then
  echo "setup: only $free_mb MiB free here; torch alone needs about 5 GiB (and a test build 6 GiB more): free some space and rerun make setup" >&2
  exit 1
elif [ "$free_mb" -lt 12288 ]; then
  echo "setup: warning: only $free_mb MiB free; torch (~5 GiB) plus a test build (~6 GiB) may not fit" >&2
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r "$REQ"
# A stable path to libtorch whatever the python minor version: .cargo/config.toml points LIBTORCH here.
# (relative link, so the checkout can move).
site=$("$VENV/bin/python" -c 'import torch, os, sys; print(os.path.relpath(os.path.dirname(torch.__file__), sys.prefix))')
ln -sfn "$site" "$VENV/torch"
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__
PY
rm -f "$VENV"/.promptir-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
