#!/usr/bin/env bash
# Boot to /init: wall time from the start of the VMM to the first line the
# initramfs's /init prints ("nestmon-init: started"), for Debian 12's i386
# kernel with the busybox initramfs of guests/linux/build-initramfs.sh,
# under nestmon and under qemu-system-i386 (TCG) in the same run,
# alternating, best of N.
#
#   benches/run-linux-boot.sh [--runs N] [--nestmon PATH] [--no-qemu]
#
# Needs ~/.cache/nestmon/debian-686/{vmlinuz,initramfs.gz} (.ci/setup) and
# a release build (target/release/nestmon, or --nestmon).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
nestmon="${CARGO_TARGET_DIR:-target}/release/nestmon"
qemu=true
while [ $# -gt 0 ]; do
  case "$1" in
  --runs) runs=$2; shift 2 ;;
  --nestmon) nestmon=$2; shift 2 ;;
  --no-qemu) qemu=false; shift ;;
  *) echo "usage: $0 [--runs N] [--nestmon PATH] [--no-qemu]" >&2; exit 2 ;;
  esac
done
cache="${NESTMON_CACHE:-$HOME/.cache/nestmon}/debian-686"
kernel="$cache/vmlinuz"
initrd="$cache/initramfs.gz"
for f in "$kernel" "$initrd" "$nestmon"; do
  [ -e "$f" ] || { echo "missing $f (run .ci/setup and cargo build --release)" >&2; exit 2; }
done
append="console=ttyS0 quiet -- true"

# Milliseconds from the start of "$@" to the marker line (or "-" if none).
to_init_ms() {
  local start line
  start=$(date +%s%N)
  timeout 120 "$@" 2>/dev/null </dev/null | {
    found=-
    while IFS= read -r line; do
      if [ "$found" = - ] && [[ "$line" == *"nestmon-init: started"* ]]; then
        found=$((($(date +%s%N) - start) / 1000000))
      fi
    done
    echo "$found"
  }
}

best() { printf '%s\n' "$@" | grep -v '^-$' | sort -n | head -n 1; }

n=() q=()
for _ in $(seq "$runs"); do
  n+=("$(to_init_ms "$nestmon" run --memsize 128 --kernel "$kernel" --initrd "$initrd" --append "$append")")
  if $qemu; then
    q+=("$(to_init_ms qemu-system-i386 -m 128 -kernel "$kernel" -initrd "$initrd" -append "$append" \
      -serial stdio -display none -nodefaults -no-reboot)")
  fi
done
echo "boot to /init, wall ms (runs: nestmon ${n[*]}${q:+; qemu ${q[*]}})"
printf '%-8s %8s\n' nestmon "$(best "${n[@]}")"
if $qemu; then
  nb=$(best "${n[@]}") qb=$(best "${q[@]}")
  printf '%-8s %8s\n' qemu "$qb"
  [ -n "$nb" ] && [ -n "$qb" ] && awk -v n="$nb" -v q="$qb" 'BEGIN { printf "nestmon / qemu: %.2f\n", n / q }'
fi
