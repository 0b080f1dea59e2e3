#!/usr/bin/env bash
# run-ab.sh: two nestmon builds, or one build with two settings, against
# each other on the benchmark workloads.
#
# Usage: benches/run-ab.sh [--rounds N] [--layouts N] [--out DIR] A B [WORKLOAD ...]
#
# A and B are each a nestmon binary, optionally followed by settings
# for it: BINARY[,KEY=VALUE...], for example
#   target/release/nestmon,nestmon.bt.inlineCaches=FALSE
# Builds the workloads of benches/workloads (all, or the ones named) with
# make -C guests benches, not nestmon.  Each round runs every workload
# natively, then under A and under B with each code-cache layout seed
# from 0 to L-1 (nestmon.bt.layoutSeed; --layouts, default 3), the two
# sides alternating so that a host that changes speed meanwhile touches
# both alike.  Per workload and side: the best time of each layout over
# the rounds (--rounds, default 3) as a ratio to the best native time,
# the mean of those ratios, and their lowest and highest; then the ratio
# of B's mean to A's, and geometric means.  A run whose output differs
# from the native output, or whose exit status is not 0, is FAIL and
# leaves the workload out of the means.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
LAYOUTS=3
OUT=${TMPDIR:-/tmp}/nestmon-ab
SIDES=()
WORKLOADS=()
usage() { sed -n '2,21p' "$0"; }
whole() {
    case $2 in
    '' | *[!0-9]* | 0) echo "$1 takes a whole number from 1" >&2; exit 2 ;;
    esac
}
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) whole "$1" "${2-}"; ROUNDS=$2; shift ;;
    --layouts) whole "$1" "${2-}"; LAYOUTS=$2; shift ;;
    --out) OUT=${2-}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 2 ;;
    *) if [ ${#SIDES[@]} -lt 2 ]; then SIDES+=("$1"); else WORKLOADS+=("$1"); fi ;;
    esac
    shift
done
if [ ${#SIDES[@]} -ne 2 ]; then
    usage >&2
    exit 2
fi
# A side's binary and its --set arguments.
BIN=() SETS=()
for s in 0 1; do
    IFS=, read -r -a parts <<<"${SIDES[$s]}"
    BIN[$s]=${parts[0]}
    SETS[$s]=""
    for kv in "${parts[@]:1}"; do
        case $kv in
        *=*) SETS[$s]="${SETS[$s]} --set $kv" ;;
        *) echo "not KEY=VALUE: $kv (in ${SIDES[$s]})" >&2; exit 2 ;;
        esac
    done
    if [ ! -x "${BIN[$s]}" ]; then
        echo "not an executable: ${BIN[$s]}" >&2
        exit 2
    fi
done
mkdir -p "$OUT"
make -s --no-print-directory -C "$ROOT/guests" benches OUT="$OUT" || { echo "building workloads failed" >&2; exit 1; }
if [ ${#WORKLOADS[@]} -eq 0 ]; then
    for src in "$ROOT"/benches/workloads/*.c; do WORKLOADS+=("$(basename "$src" .c)"); done
fi
for w in "${WORKLOADS[@]}"; do
    if [ ! -f "$OUT/bench/$w.elf" ]; then
        echo "no such workload: $w (benches/workloads/$w.c)" >&2
        exit 2
    fi
done

# seconds COMMAND... -> wall seconds of one run, or FAIL (exit status not 0
# or output, without '#' lines, not the reference $REF)
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$OUT/run.out" 2>"$OUT/run.err" </dev/null || { echo FAIL; return; }
    t1=$(date +%s.%N)
    if [ -n "$REF" ] && ! grep -v '^#' "$OUT/run.out" | cmp -s - "$REF"; then
        echo FAIL
        return
    fi
    echo "$t0 $t1" | awk '{printf "%.4f", $2 - $1}'
}
# lower OLD NEW -> the lower time (FAIL wins)
lower() {
    if [ "$1" = FAIL ] || [ "$2" = FAIL ]; then echo FAIL; elif [ -z "$1" ]; then echo "$2"; else
        echo "$1 $2" | awk '{print ($2 < $1) ? $2 : $1}'
    fi
}

declare -A BEST
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS..." >&2
    for w in "${WORKLOADS[@]}"; do
        REF=""
        t=$(seconds "$OUT/bench/$w.native")
        grep -v '^#' "$OUT/run.out" >"$OUT/$w.ref"
        BEST[$w.native]=$(lower "${BEST[$w.native]-}" "$t")
        REF=$OUT/$w.ref
        for seed in $(seq 0 $((LAYOUTS - 1))); do
            for s in 0 1; do
                # shellcheck disable=SC2086 # the settings are words
                t=$(seconds "${BIN[$s]}" run ${SETS[$s]} --set nestmon.bt.layoutSeed="$seed" \
                    --kernel "$OUT/bench/$w.elf")
                BEST[$w.$s.$seed]=$(lower "${BEST[$w.$s.$seed]-}" "$t")
            done
        done
    done
done

# summary NATIVE T0 T1 ... -> "mean lowest highest" of the ratios, or FAIL
summary() {
    local native=$1
    shift
    case " $native $* " in *" FAIL "*) echo FAIL; return ;; esac
    echo "$native $*" | awk '{ lo = hi = $2 / $1; sum = 0
        for (i = 2; i <= NF; i++) { r = $i / $1; sum += r; if (r < lo) lo = r; if (r > hi) hi = r }
        printf "%.3f %.3f %.3f", sum / (NF - 1), lo, hi }'
}
printf 'A: %s\nB: %s\n' "${SIDES[0]}" "${SIDES[1]}"
printf '%d rounds, layouts 0-%d; ratios to native: mean over layouts (lowest-highest)\n\n' "$ROUNDS" $((LAYOUTS - 1))
printf '%-12s %8s %22s %22s %7s\n' workload native A B B/A
LN_A=0 LN_B=0 N=0
for w in "${WORKLOADS[@]}"; do
    native=${BEST[$w.native]}
    line=$(printf '%-12s %8s' "$w" "$native")
    means=()
    for s in 0 1; do
        times=()
        for seed in $(seq 0 $((LAYOUTS - 1))); do times+=("${BEST[$w.$s.$seed]}"); done
        sum=$(summary "$native" "${times[@]}")
        if [ "$sum" = FAIL ]; then
            means[$s]=FAIL
            line="$line $(printf '%22s' FAIL)"
        else
            read -r mean lo hi <<<"$sum"
            means[$s]=$mean
            line="$line $(printf '%22s' "$mean ($lo-$hi)")"
        fi
    done
    if [ "${means[0]}" = FAIL ] || [ "${means[1]}" = FAIL ]; then
        printf '%s %7s\n' "$line" -
        continue
    fi
    printf '%s %7s\n' "$line" "$(echo "${means[0]} ${means[1]}" | awk '{printf "%.3f", $2 / $1}')"
    LN_A=$(echo "$LN_A ${means[0]}" | awk '{print $1 + log($2)}')
    LN_B=$(echo "$LN_B ${means[1]}" | awk '{print $1 + log($2)}')
    N=$((N + 1))
done
if [ $N -gt 0 ]; then
    echo "$LN_A $LN_B $N" | awk '{ a = exp($1 / $3); b = exp($2 / $3)
        printf "%-12s %8s %22.3f %22.3f %7.3f\n", "geomean", "", a, b, b / a }'
fi
