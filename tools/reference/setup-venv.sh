#!/usr/bin/env bash
# setup-venv.sh — (re)create the Python reference stack used by tools/reference/*.py
#
# The fixture generators run on Debian 12 (bookworm) with Debian's own torch, never a PyPI torch:
#   apt:  python3-torch (1.13), python3-sentencepiece (0.1.97), python3-numpy, python3-venv
#   venv: /opt/calpaca-ref, made with `python3 -m venv --system-site-packages`, plus from PyPI
#         transformers==4.35.2 (and its pure-Python/Rust deps, pinned below),
#         peft==0.3.0 and accelerate==0.21.0 installed with --no-deps (their torch requirement is
#         satisfied by Debian's python3-torch; pip must never pull a PyPI torch).
#
# Every PyPI package is installed with --no-deps and an exact version, so pip cannot resolve
# anything on its own (in particular not torch).
#
# Usage:   tools/reference/setup-venv.sh            # venv at /opt/calpaca-ref
#          CALPACA_REF_VENV=/some/dir tools/reference/setup-venv.sh
# Idempotent: if the venv already imports the expected versions, it does nothing.
set -euo pipefail

VENV="${CALPACA_REF_VENV:-/opt/calpaca-ref}"

# Exact versions of the PyPI packages in the reference venv (pip list --local of the venv the
# committed fixtures were made with). transformers' own dependencies first.
PIP_PKGS=(
  "filelock==4.3.1"
  "fsspec==2026.9.0"
  "hf-xet==1.8.0"
  "huggingface_hub==0.36.2"
  "packaging==26.4"
  "regex==2026.11.19"
  "safetensors==0.8.0"
  "tokenizers==0.15.2"
  "tqdm==4.70.1"
  "transformers==4.35.2"
  "accelerate==0.21.0"
  "peft==0.3.0"
  "gguf==0.19.0"  # make_quant_fixtures.py: ggml's own (numpy) quantizers as the reference
)

check() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import sys
import numpy, torch, sentencepiece, transformers, peft, accelerate, safetensors, gguf
from transformers import LlamaForCausalLM, LlamaTokenizer  # noqa: F401
want = {"transformers": "4.35.2", "peft": "0.3.0", "accelerate": "0.21.0", "sentencepiece": "0.1.97"}
got = {"transformers": transformers.__version__, "peft": peft.__version__,
       "accelerate": accelerate.__version__, "sentencepiece": sentencepiece.__version__}
if got != want or not torch.__version__.startswith("1.13"):
    print("version mismatch:", got, torch.__version__, file=sys.stderr)
    sys.exit(1)
# torch must be Debian's (system site-packages), not a wheel inside the venv
if "dist-packages" not in torch.__file__:
    print("torch is not Debian's python3-torch:", torch.__file__, file=sys.stderr)
    sys.exit(1)
EOF
}

if check; then
  echo "setup-venv: $VENV is already set up (torch/transformers/peft/accelerate/sentencepiece OK)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

echo "setup-venv: installing Debian packages" >&2
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
  python3-torch python3-sentencepiece python3-numpy python3-yaml python3-venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-venv: creating $VENV" >&2
  $SUDO mkdir -p "$(dirname "$VENV")"
  $SUDO /usr/bin/python3 -m venv --system-site-packages "$VENV"
  if [ -n "$SUDO" ]; then $SUDO chown -R "$(id -u):$(id -g)" "$VENV"; fi
fi

echo "setup-venv: installing pinned PyPI packages (all --no-deps)" >&2
"$VENV/bin/pip" install --no-deps --no-input "${PIP_PKGS[@]}"

if check; then
  echo "setup-venv: OK ($VENV)"
else
  echo "setup-venv: the venv at $VENV does not import the expected versions" >&2
  exit 1
fi
