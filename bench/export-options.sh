#!/bin/bash
# Compares qemu-storage-daemon FUSE export options for a qcow2 volume against a raw one, the way
# the bench's item 5 runs them: a RAM-backed xfs share, a direct-io loop, ext4 in the volume, a
# 512 MiB fio file laid out once, caches dropped, O_DIRECT libaio, 3 s per job.
# Not part of `npm run bench`: it is the by-hand experiment behind docs/BENCHMARKS.md ("Second look").
#
#   bash bench/export-options.sh ROUNDS 'NAME THREADS FILE-OPTIONS [IOTHREAD-OPTIONS]' ...
#   bash bench/export-options.sh 3 '2t 2 aio=io_uring,cache.direct=on' '1t-native 1 aio=native,cache.direct=on'
# Needs root, fio, xfsprogs and the qemu of scripts/install-qemu.sh (or FILEDRIVER_QEMU=system).
set -euo pipefail
rounds=$1
shift
prefix=${FILEDRIVER_QEMU:-/opt/filedriver/qemu}
if [ "$prefix" = system ]; then
  qemu() { "$@"; }
else
  lib=$prefix/usr/lib/x86_64-linux-gnu
  export QEMU_MODULE_DIR=$lib/qemu
  qemu() { "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$prefix/usr/bin/$1" "${@:2}"; }
fi

work=$(mktemp -d /tmp/export-options.XXXXXX)
ram=$(mktemp -p /dev/shm export-options.XXXXXX)
share=$work/share mnt=$work/mnt
mkdir -p "$share" "$mnt"
dev='' pid=''
cleanup() {
  umount "$mnt" 2>/dev/null || true
  [ -z "$dev" ] || losetup -d "$dev" 2>/dev/null || true
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  umount "$share" 2>/dev/null || true
  rm -rf "$work" "$ram"
}
trap cleanup EXIT

truncate -s 6G "$ram"
mkfs.xfs -q -f "$ram"
mount -o loop "$ram" "$share"
qemu qemu-img create -q -f qcow2 "$share/q.qcow2" 4G
truncate -s 4G "$share/r.raw"

job() { # rw bs depth -> IOPS for 4k, MiB/s otherwise
  fio --name=x --filename="$mnt/f.fio" --size=512M --direct=1 --ioengine=libaio --rw="$1" --bs="$2" \
    --iodepth="$3" --runtime=3 --time_based --output-format=json |
    python3 -c "import json,sys; w=json.load(sys.stdin)['jobs'][0]['write']; print(round(w['iops']) if '$2'=='4k' else round(w['bw_bytes']/2**20))"
}

measure() { # name: mounts $dev on $mnt, lays out the file once, prints both jobs
  blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q "$dev"
  mount "$dev" "$mnt"
  [ -f "$mnt/f.fio" ] || fio --name=x --filename="$mnt/f.fio" --size=512M --direct=1 --ioengine=libaio --rw=write --bs=1M --iodepth=8 >/dev/null
  sync
  echo 3 >/proc/sys/vm/drop_caches
  echo "$1: random write 4 KiB $(job randwrite 4k 32) IOPS, sequential write 1 MiB $(job write 1M 8) MiB/s"
  umount "$mnt"
  losetup -d "$dev"
  dev=''
}

for round in $(seq 1 "$rounds"); do
  echo "round $round"
  dev=$(losetup -f --show --direct-io=on "$share/r.raw")
  measure raw
  for config in "$@"; do
    read -r name threads options iothread <<<"$config"
    objects=() iothreads=''
    for i in $(seq 0 $((threads - 1))); do
      objects+=(--object "iothread,id=io$i${iothread:+,$iothread}")
      iothreads+=",iothread.$i=io$i"
    done
    : >"$work/export"
    qemu qemu-storage-daemon "${objects[@]}" \
      --blockdev "file,node-name=f0,filename=$share/q.qcow2,$options,locking=on,discard=unmap" \
      --blockdev qcow2,node-name=q0,file=f0,discard=unmap \
      --export "fuse,id=e0,node-name=q0,mountpoint=$work/export,writable=on,growable=on$iothreads" \
      --pidfile "$work/qsd.pid" --daemonize
    pid=$(cat "$work/qsd.pid")
    dev=$(losetup -f --show --direct-io=on "$work/export")
    measure "$name"
    kill "$pid"
    while [ -e "/proc/$pid" ]; do sleep 0.1; done
    pid=''
  done
done
