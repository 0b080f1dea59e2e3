#!/bin/sh
# run-events.sh: cycles per event under nestmon and QEMU TCG, side by side.
#
# Usage: benches/run-events.sh [--no-nestmon] [--no-qemu] [--runs N]
#                              [--timeout S] [--out DIR] [--paging]
#
# Builds release nestmon (cargo build --release -p monitor; honours
# CARGO_TARGET_DIR) and the guest benches/events/events.c (make -C guests
# bench-events OUT=DIR -> DIR/bench/events.elf), runs it under
# `nestmon run --kernel` and under qemu-system-i386 (TCG, the flags of
# run-ratios.sh), and prints per event: nestmon and QEMU cycles (TSC ticks)
# per event, the ratio nestmon/QEMU and the goal mark: "ok" when nestmon is
# cheaper than QEMU (and, for the system call round trips int80_ring3_iret
# and sysenter_sysexit, also under 500 cycles), else "MISS".  With --runs N
# (default 1) each VMM runs N times, the two alternating, and the lowest
# figure per event is kept: the host's noise only ever adds cycles.
# --paging runs every event with guest paging on (the guest's "paging").
# A run is killed after S seconds (default 120).  QEMU=PATH picks the QEMU binary.
# Also measures the host TSC rate (benches/events/tsc_rate.c, built with the
# host cc) and the rate at which each guest saw its TSC advance against wall
# time; if a guest's rate is more than 2% off the host's, its cycles are
# converted to host ticks (marked '*').  Exit status: 0 when the table was
# printed (goal met or not), 1 when something could not be built or a run
# failed.  The machinery is benches/per-event.sh (shared with run-mmu.sh).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=1
NESTMON=1
DO_QEMU=1
TIMEOUT=120
OUT=${TMPDIR:-/tmp}/nestmon-events
APPEND=
while [ $# -gt 0 ]; do
    case $1 in
    --no-nestmon) NESTMON=0 ;;
    --no-qemu) DO_QEMU=0 ;;
    --runs) RUNS=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --paging) APPEND=paging ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
GUEST_SRC=benches/events/events.c
MAKE_TARGET=bench-events
GUEST=$OUT/bench/events.elf
NESTMON_ARGS=
. "$ROOT/benches/per-event.sh"
pe_check_args
pe_prepare
pe_run_all
pe_table '
    function goal(e, a, b,   g) {
        g = (a + 0 < b + 0) ? "ok" : "MISS (not cheaper than QEMU)"
        if ((e == "int80_ring3_iret" || e == "sysenter_sysexit") && a + 0 >= 500)
            g = (g == "ok") ? "MISS (not under 500 cycles)" : "MISS (not cheaper than QEMU, not under 500 cycles)"
        return g
    }
    function extra() { }
' "goal (every event cheaper than QEMU, syscall round trips < 500 cycles)"
exit $FAILED
