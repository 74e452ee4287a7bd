#!/usr/bin/env bash
# Installs, with apt-get, every Debian package gpu-guest's steps and tests use. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential flex bison bc libelf-dev libssl-dev dpkg-dev fakeroot rsync kmod cpio xz-utils patch \
  binutils debian-archive-keyring \
  linux-source-6.1 gpgv gnupg wget \
  mmdebstrap debootstrap makeself e2fsprogs erofs-utils qemu-system-x86 busybox-static \
  skopeo docker-registry buildah bsdutils ca-certificates rpm cryptsetup-bin ccache crun >/dev/null
