#!/usr/bin/env bash
# In-guest workloads of busybox (benches/linux/workloads.sh: a shell loop,
# md5sum + sha256sum of ~30 MiB, gzip and gunzip of it, 1,000 fork+execs of
# a small program, a four-process pipeline moving 90 MiB) inside Debian
# 12's i386 kernel under nestmon and under qemu-system-i386 (TCG), and the
# same script natively on the host with the same static i386 busybox, all
# in one run. Each workload is timed by the machine's own monotonic clock
# around it (in the guest: the guest kernel's), best of N; the table gives
# the times and the ratios to native and nestmon / QEMU. What each workload
# computed (checksums, sizes) must be the same everywhere, or the script
# fails.
#
#   benches/run-linux.sh [--runs N] [--mib M] [--memsize MiB]
#                        [--nestmon PATH] [--no-qemu] [--keep DIR]
#
#   --runs N       runs of each workload per machine (default 3; best kept)
#   --mib M        data size in MiB (default 32)
#   --memsize MiB  guest RAM for nestmon and QEMU (default 256)
#   --nestmon PATH the nestmon binary (default: release build under
#                  $CARGO_TARGET_DIR or target/)
#   --no-qemu      skip QEMU
#   --keep DIR     keep each machine's raw output in DIR
#
# Needs ~/.cache/nestmon/debian-686/{vmlinuz,initramfs.gz} and the
# busybox-static .deb in ~/.cache/nestmon/debs (.ci/setup fetches all
# three), a release build of nestmon, and QEMU=PATH or qemu-system-i386
# unless --no-qemu. The host must run i386 programs (any x86-64 Linux with
# IA32 emulation does). Exit status: 0 done; 1 a machine failed or
# computed something else; 2 usage or something missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
mib=32
memsize=256
nestmon="${CARGO_TARGET_DIR:-$root/target}/release/nestmon"
qemu=${QEMU:-qemu-system-i386}
do_qemu=true
keep=
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
  --runs) runs=${2:?--runs needs N}; shift 2 ;;
  --mib) mib=${2:?--mib needs M}; shift 2 ;;
  --memsize) memsize=${2:?--memsize needs MiB}; shift 2 ;;
  --nestmon) nestmon=${2:?--nestmon needs a path}; shift 2 ;;
  --no-qemu) do_qemu=false; shift ;;
  --keep) keep=${2:?--keep needs a directory}; shift 2 ;;
  -h | --help) usage; exit 0 ;;
  *) echo "run-linux: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$runs$mib$memsize" in *[!0-9]*) echo "run-linux: --runs, --mib and --memsize take numbers" >&2; exit 2 ;; esac

cache="${NESTMON_CACHE:-$HOME/.cache/nestmon}"
kernel="$cache/debian-686/vmlinuz"
initrd="$cache/debian-686/initramfs.gz"
busybox_deb=$(find "$cache/debs" -maxdepth 1 -name 'busybox-static_*_i386.deb' 2>/dev/null | LC_ALL=C sort | tail -n 1)
missing() { echo "run-linux: missing $1" >&2; exit 2; }
[ -s "$kernel" ] || missing "$kernel (run .ci/setup)"
[ -s "$initrd" ] || missing "$initrd (run .ci/setup or guests/linux/build-initramfs.sh)"
[ -n "$busybox_deb" ] || missing "the busybox-static:i386 package in $cache/debs (run .ci/setup)"
[ -x "$nestmon" ] || missing "$nestmon (cargo build --release, or --nestmon PATH)"
if $do_qemu && ! command -v "$qemu" >/dev/null; then
  missing "$qemu (install qemu-system-x86, set QEMU=PATH, or pass --no-qemu)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -z "$keep" ] || mkdir -p "$keep"

# The guest's initramfs: the busybox one with /bench/workloads.sh appended
# as a second archive (Linux unpacks concatenated archives in order).
mkdir -p "$work/extra/bench"
install -m 0644 "$root/benches/linux/workloads.sh" "$work/extra/bench/workloads.sh"
cp "$initrd" "$work/initramfs.gz"
(cd "$work/extra" && find . -mindepth 1 | LC_ALL=C sort | perl "$root/guests/linux/newc-cpio.pl") |
  gzip -9 -n >>"$work/initramfs.gz"

# Natively: the same busybox, its applets first on PATH, data on a tmpfs.
mkdir -p "$work/native/bin"
dpkg-deb -x "$busybox_deb" "$work/native/deb"
install -m 0755 "$work/native/deb/bin/busybox" "$work/native/bin/busybox"
"$work/native/bin/busybox" --install -s "$work/native/bin"
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=$work

append="console=ttyS0 quiet -- sh /bench/workloads.sh $runs $mib /bin /tmp/bench"
limit=$((600 + runs * mib * 20))

# run_machine NAME COMMAND...: runs it, keeps its output in $work/NAME.out,
# and says how long it took on the host's wall clock.
run_machine() {
  local name=$1 start status=0
  shift
  echo "run-linux: $name ..." >&2
  start=$(date +%s%N)
  timeout "$limit" "$@" </dev/null >"$work/$name.out" 2>"$work/$name.err" || status=$?
  echo "run-linux: $name took $((($(date +%s%N) - start) / 1000000)) ms of wall time (status $status)" >&2
  [ -z "$keep" ] || cp "$work/$name.out" "$work/$name.err" "$keep/"
  if [ "$status" -ne 0 ] || ! grep -q '^nestmon-bench: pipes ' "$work/$name.out"; then
    echo "run-linux: $name failed (status $status); its output:" >&2
    tail -n 20 "$work/$name.out" "$work/$name.err" >&2
    exit 1
  fi
}

run_machine native env -i PATH="$work/native/bin" "$work/native/bin/busybox" sh \
  "$root/benches/linux/workloads.sh" "$runs" "$mib" "$work/native/bin" "$shm/nestmon-bench.$$"
run_machine nestmon "$nestmon" run --memsize "$memsize" --kernel "$kernel" \
  --initrd "$work/initramfs.gz" --append "$append"
machines=(native nestmon)
if $do_qemu; then
  run_machine qemu "$qemu" -m "$memsize" -kernel "$kernel" -initrd "$work/initramfs.gz" \
    -append "$append" -serial stdio -display none -nodefaults -no-reboot
  machines+=(qemu)
fi

# What every machine computed must be what the host computed.
for m in "${machines[@]}"; do
  tr -d '\r' <"$work/$m.out" | grep '^nestmon-bench-check: ' >"$work/$m.check" || true
done
for m in "${machines[@]}"; do
  if ! cmp -s "$work/native.check" "$work/$m.check"; then
    echo "run-linux: $m computed something else than the host:" >&2
    diff "$work/native.check" "$work/$m.check" >&2 || true
    exit 1
  fi
done

# The best time (ns) of workload $2 on machine $1.
best() {
  tr -d '\r' <"$work/$1.out" | awk -v w="$2" '$1 == "nestmon-bench:" && $2 == w {
    if (best == "" || $4 < best) best = $4 } END { print best }'
}

echo
echo "busybox workloads, best of $runs, seconds by each machine's clock (data: $(sed -n 's/^nestmon-bench-check: data //p' "$work/native.check"))"
if $do_qemu; then
  printf '%-11s %9s %9s %9s %15s %12s %15s\n' workload native nestmon qemu nestmon/native qemu/native nestmon/qemu
else
  printf '%-11s %9s %9s %15s\n' workload native nestmon nestmon/native
fi
for w in shell-loop checksum gzip gunzip fork-exec pipes; do
  n=$(best native "$w") v=$(best nestmon "$w") q=
  $do_qemu && q=$(best qemu "$w")
  awk -v w="$w" -v n="$n" -v v="$v" -v q="$q" 'BEGIN {
    if (q == "") printf "%-11s %9.3f %9.3f %15.2f\n", w, n / 1e9, v / 1e9, v / n
    else printf "%-11s %9.3f %9.3f %9.3f %15.2f %12.2f %15.2f\n", w, n / 1e9, v / 1e9, q / 1e9, v / n, q / n, v / q
  }'
done
