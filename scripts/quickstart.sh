#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: install what is missing, then build the Intel
# GPU guest (kernel from Debian's linux-source package, Debian rootfs from the host's mirror) and
# boot it in QEMU to prove it works. Outputs land in out/intel/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/host-packages.sh
npm ci --no-audit --no-fund
npx gpu-guest build --vendor intel "$@"
npx gpu-guest verify --vendor intel "$@"
