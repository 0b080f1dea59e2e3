#!/bin/sh
# run-ratios.sh: nestmon benchmark workloads as ratios to native.
#
# Usage: benches/run-ratios.sh [--qemu] [--no-nestmon] [--runs N] [--layouts N] [--out DIR]
#
# Builds release nestmon (cargo build --release -p monitor; honours
# CARGO_TARGET_DIR), builds the workloads in benches/workloads/*.c with
# guests/Makefile (make -C guests benches OUT=DIR: each workload becomes
# DIR/bench/NAME.native, a static i386 Linux program, and DIR/bench/NAME.elf,
# a Multiboot guest, from the same object), then runs each workload
# natively, under `nestmon run --kernel NAME.elf` and, with --qemu, under
# qemu-system-i386 (TCG).  Wall time is the best of N runs (default 3).
# Prints a table of times and ratios to native per workload plus the
# geometric mean of the ratios, and (with nestmon) the host instructions
# per guest instruction of the workload's translations: one more run with
# --log-translations, counting the guest instructions each unit was made
# from and the host instructions it became, exit stubs included (a static
# count over every translation, not weighted by how often each runs).  A run longer than 30 s is not repeated.  A run whose output differs from the native
# output or whose exit status is wrong is reported as FAIL and left out of
# the geometric mean.  --no-nestmon skips building and running nestmon.
# --layouts N (N >= 2) also runs nestmon with the code-cache layout seeds
# 1 to N-1 (config key nestmon.bt.layoutSeed: the same translations,
# placed with other gaps between them) and adds the lowest and highest
# ratio over seeds 0 to N-1: how much of a ratio is where the host code
# happened to land rather than what it is.  The ratio column and its
# geometric mean stay those of seed 0, the normal layout.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
LAYOUTS=1
QEMU=0
NESTMON=1
OUT=${TMPDIR:-/tmp}/nestmon-bench
while [ $# -gt 0 ]; do
    case $1 in
    --qemu) QEMU=1 ;;
    --no-nestmon) NESTMON=0 ;;
    --runs) RUNS=$2; shift ;;
    --layouts) LAYOUTS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
NESTMON_BIN=$TARGET/release/nestmon

if [ $NESTMON = 1 ]; then
    echo "building release nestmon..." >&2
    (cd "$ROOT" && cargo build --release -q -p monitor) || { echo "cargo build failed" >&2; exit 1; }
fi
make -s --no-print-directory -C "$ROOT/guests" benches OUT="$OUT" || { echo "building workloads failed" >&2; exit 1; }
if [ $QEMU = 1 ] && ! command -v qemu-system-i386 >/dev/null; then
    echo "qemu-system-i386 not found" >&2; exit 1
fi

now() { date +%s.%N; }
case $LAYOUTS in
''|*[!0-9]*|0) echo "--layouts takes a whole number from 1" >&2; exit 2 ;;
esac
# best_of KIND FILE EXPECTED_STATUS REF_OUTPUT [LAYOUT_SEED] -> prints seconds or FAIL
best_of() {
    kind=$1 file=$2 want=$3 ref=$4 seed=${5:-0} best=""
    i=0
    while [ $i -lt "$RUNS" ]; do
        t0=$(now)
        case $kind in
        native) "$file" >"$OUT/run.out" 2>"$OUT/run.err" </dev/null ;;
        nestmon) "$NESTMON_BIN" run --set nestmon.bt.layoutSeed="$seed" --kernel "$file" >"$OUT/run.out" 2>"$OUT/run.err" </dev/null ;;
        qemu) qemu-system-i386 -kernel "$file" -serial stdio -display none -nodefaults -monitor none \
                -device isa-debug-exit,iobase=0xf4,iosize=4 -no-reboot -m 128 >"$OUT/run.out" 2>"$OUT/run.err" </dev/null ;;
        esac
        st=$?
        t1=$(now)
        if [ $st -ne "$want" ] || { [ -n "$ref" ] && ! grep -v '^#' "$OUT/run.out" | cmp -s - "$ref"; }; then
            echo FAIL
            return
        fi
        t=$(echo "$t1 $t0" | awk '{printf "%.3f", $1 - $2}')
        if [ -z "$best" ] || [ "$(echo "$t $best" | awk '{print ($1 < $2)}')" = 1 ]; then best=$t; fi
        i=$((i + 1))
        # runs longer than 30 s (rep-heavy code under QEMU TCG) are not repeated
        if [ "$(echo "$t" | awk '{print ($1 > 30)}')" = 1 ]; then break; fi
    done
    echo "$best"
}
# host_per_guest LOG -> host instructions per guest instruction in a
# translation log (each unit: "IN: N guest instructions", its guest
# instructions, "OUT: ...", one indented line per host instruction)
host_per_guest() {
    awk '/^IN: / { g += $2; out = 0; next } /^OUT: / { out = 1; next }
        out && /^  / { h++ } END { if (g) printf "%.2f", h / g; else print "-" }' "$1"
}
# lowest/highest A B -> the lower/higher of two ratios ("-" if either is)
lowest() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else echo "$1 $2" | awk '{print ($1 < $2) ? $1 : $2}'; fi; }
highest() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; fi; }
ratio() { if [ "$1" = FAIL ] || [ "$2" = FAIL ]; then echo "-"; else echo "$1 $2" | awk '{printf "%.2f", $1 / $2}'; fi; }

printf '%-12s %9s' workload native
[ $NESTMON = 1 ] && printf ' %9s %7s %10s' nestmon ratio host/guest
[ $NESTMON = 1 ] && [ "$LAYOUTS" -gt 1 ] && printf ' %9s %9s' "min/$LAYOUTS" "max/$LAYOUTS"
[ $QEMU = 1 ] && printf ' %9s %7s' qemu ratio
printf '\n'
LN_N=0 CNT_N=0 LN_Q=0 CNT_Q=0
for src in "$ROOT"/benches/workloads/*.c; do
    w=$(basename "$src" .c)
    tn=$(best_of native "$OUT/bench/$w.native" 0 "")
    grep -v '^#' "$OUT/run.out" >"$OUT/$w.ref"
    printf '%-12s %9s' "$w" "$tn"
    if [ $NESTMON = 1 ]; then
        tg=$(best_of nestmon "$OUT/bench/$w.elf" 0 "$OUT/$w.ref")
        r=$(ratio "$tg" "$tn")
        "$NESTMON_BIN" run --kernel "$OUT/bench/$w.elf" --log-translations "$OUT/$w.translations" \
            >/dev/null 2>&1 </dev/null
        printf ' %9s %7s %10s' "$tg" "$r" "$(host_per_guest "$OUT/$w.translations")"
        if [ "$LAYOUTS" -gt 1 ]; then
            lo=$r hi=$r seed=1
            while [ $seed -lt "$LAYOUTS" ]; do
                rs=$(ratio "$(best_of nestmon "$OUT/bench/$w.elf" 0 "$OUT/$w.ref" $seed)" "$tn")
                lo=$(lowest "$lo" "$rs") hi=$(highest "$hi" "$rs")
                seed=$((seed + 1))
            done
            printf ' %9s %9s' "$lo" "$hi"
        fi
        if [ "$r" != - ]; then LN_N=$(echo "$LN_N $r" | awk '{print $1 + log($2)}'); CNT_N=$((CNT_N + 1)); fi
    fi
    if [ $QEMU = 1 ]; then
        tq=$(best_of qemu "$OUT/bench/$w.elf" 1 "$OUT/$w.ref")
        r=$(ratio "$tq" "$tn")
        printf ' %9s %7s' "$tq" "$r"
        if [ "$r" != - ]; then LN_Q=$(echo "$LN_Q $r" | awk '{print $1 + log($2)}'); CNT_Q=$((CNT_Q + 1)); fi
    fi
    printf '\n'
done
printf '%-12s %9s' geomean ""
if [ $NESTMON = 1 ]; then
    if [ $CNT_N -gt 0 ]; then printf ' %9s %7s %10s' "" "$(echo "$LN_N $CNT_N" | awk '{printf "%.2f", exp($1 / $2)}')" ""; else printf ' %9s %7s %10s' "" - ""; fi
    [ "$LAYOUTS" -gt 1 ] && printf ' %9s %9s' "" ""
fi
if [ $QEMU = 1 ]; then
    if [ $CNT_Q -gt 0 ]; then printf ' %9s %7s' "" "$(echo "$LN_Q $CNT_Q" | awk '{printf "%.2f", exp($1 / $2)}')"; else printf ' %9s %7s' "" -; fi
fi
printf '\n'
