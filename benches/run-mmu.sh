#!/bin/sh
# run-mmu.sh: cycles per shadow-MMU event under nestmon and QEMU TCG.
#
# Usage: benches/run-mmu.sh [--no-nestmon] [--no-qemu] [--runs N]
#                           [--timeout S] [--out DIR] [--only NAME]
#                           [--nestmon-opt ARG]...
#
# Builds release nestmon (cargo build --release -p monitor; honours
# CARGO_TARGET_DIR) and the guest benches/mmu/mmu.c (make -C guests
# bench-mmu OUT=DIR -> DIR/bench/mmu.elf), runs it under `nestmon run
# --kernel` and under qemu-system-i386 (TCG), and prints per event (guest
# page fault handled by the guest, PTE rewrite + INVLPG, present -> not
# present -> present, CR3 reload, switch between two spaces, address-space
# creation, a store next to hot code, a loop patching its own immediate, a
# plain store): nestmon and QEMU cycles (TSC ticks) per event, the ratio
# nestmon/QEMU and the goal mark: "ok" when nestmon is cheaper than QEMU
# (and, for store_hot_code_page, within 10x of store_plain under nestmon),
# else "MISS".  With --runs N (default 1) each VMM runs N times, the two
# alternating, and the lowest figure per event is kept.  --nestmon-opt ARG
# (repeatable) adds ARG to the `nestmon run` command line, e.g. an option
# that turns out-of-sync page tables off, or --stats (written to
# DIR/nestmon.N.err).  --only NAME measures one event.  A run is killed
# after S seconds (default 300).  QEMU=PATH picks the QEMU binary.
# TSC rates and exit status as for run-events.sh; the machinery is
# benches/per-event.sh.  Each run's output stays in DIR/KIND.N.out
# (default DIR: $TMPDIR/nestmon-mmu).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=1
NESTMON=1
DO_QEMU=1
TIMEOUT=300
OUT=${TMPDIR:-/tmp}/nestmon-mmu
APPEND=
NESTMON_ARGS=
. "$ROOT/benches/per-event.sh"
while [ $# -gt 0 ]; do
    case $1 in
    --no-nestmon) NESTMON=0 ;;
    --no-qemu) DO_QEMU=0 ;;
    --runs) RUNS=${2-}; shift ;;
    --timeout) TIMEOUT=${2-}; shift ;;
    --out) OUT=${2-}; shift ;;
    --only) APPEND="only=${2-}"; shift ;;
    --nestmon-opt)
        [ $# -ge 2 ] || { echo "--nestmon-opt wants an argument" >&2; exit 2; }
        NESTMON_ARGS="$NESTMON_ARGS $(pe_quote "$2")"; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
GUEST_SRC=benches/mmu/mmu.c
MAKE_TARGET=bench-mmu
GUEST=$OUT/bench/mmu.elf
pe_check_args
pe_prepare
[ -n "$NESTMON_ARGS" ] && [ $NESTMON = 1 ] && echo "nestmon run options:$NESTMON_ARGS" >&2
pe_run_all
pe_table '
    function goal(e, a, b,   g, p) {
        g = (a + 0 < b + 0) ? "ok" : "MISS (not cheaper than QEMU)"
        if (e == "store_hot_code_page") {
            p = nv["store_plain"]
            if (p == "" || p == "FAIL")
                g = "FAIL (no store_plain)"
            else if (a + 0 > 10 * p)
                g = (g == "ok") ? "MISS (over 10x store_plain)" : "MISS (not cheaper than QEMU, over 10x store_plain)"
        }
        return g
    }
    function extra(   p, h) {
        if (!has_n) return
        p = nv["store_plain"]; h = nv["store_hot_code_page"]
        if (p != "" && p != "FAIL" && h != "" && h != "FAIL" && p > 0)
            printf "nestmon: store_hot_code_page / store_plain = %.1f (goal: at most 10)\n", h / p
    }
' "goal (every event cheaper than QEMU, a store next to hot code within 10x of a plain store)"
exit $FAILED
