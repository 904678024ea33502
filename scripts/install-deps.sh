#!/usr/bin/env bash
# Installs the Debian 12 packages calpaca needs to build and test. Run as root.
set -euo pipefail
PKGS=(build-essential cmake g++ pkg-config
      libprotobuf-dev protobuf-compiler libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
      libsentencepiece-dev sentencepiece libgtest-dev libgmock-dev libbenchmark-dev
      clang libclang-rt-14-dev python3 ccache libssl-dev libpng-dev libopenmpi-dev openmpi-bin
      g++-aarch64-linux-gnu qemu-user-static)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
