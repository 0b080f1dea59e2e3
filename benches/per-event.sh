# per-event.sh: the part of benches/run-events.sh and benches/run-mmu.sh
# that is the same: building, running a per-event cost guest (lib/bench.h)
# under nestmon and QEMU TCG in alternation, keeping the lowest figure per
# event, the TSC rates, and the side-by-side table.  Sourced, not run.
#
# The caller sets:
#   ROOT         the repository
#   OUT          the work directory (created)
#   RUNS TIMEOUT NESTMON DO_QEMU APPEND
#                runs per VMM, seconds per run, 1/0 to run nestmon and
#                QEMU, the guest's command line
#   GUEST_SRC    the guest's source (relative to ROOT, for messages)
#   MAKE_TARGET  the guests/Makefile target that builds it
#   GUEST        the .elf that target makes (under OUT)
#   NESTMON_ARGS extra `nestmon run` arguments, each already quoted for
#                the shell (pe_quote), or empty
# and calls pe_check_args, pe_prepare, pe_run_all (sets FAILED), then
# pe_table with an awk program that defines goal(e, a, b) (the goal mark
# of event e, nestmon cycles a, QEMU cycles b; nv[] and qv[] hold every
# event's figures) and extra() (lines printed after the rates).

# pe_quote ARG: ARG quoted for the shell ('...')
pe_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

pe_check_args() {
    case $RUNS in ''|*[!0-9]*|0) echo "--runs wants a positive number" >&2; exit 2 ;; esac
    case $TIMEOUT in ''|*[!0-9]*|0) echo "--timeout wants a positive number of seconds" >&2; exit 2 ;; esac
}

# Builds release nestmon (cargo build --release -p monitor; honours
# CARGO_TARGET_DIR) and the guest; measures the host TSC rate into HOST_HZ.
pe_prepare() {
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    NESTMON_BIN=$TARGET/release/nestmon
    mkdir -p "$OUT" || exit 1
    for tool in make timeout date; do
        command -v $tool >/dev/null || { echo "$tool not found" >&2; exit 1; }
    done
    QEMU_BIN=${QEMU:-qemu-system-i386}
    if [ $DO_QEMU = 1 ] && ! command -v "$QEMU_BIN" >/dev/null; then
        echo "$QEMU_BIN not found: install it (Debian: qemu-system-x86), set QEMU=/path/to/qemu-system-i386 or pass --no-qemu" >&2
        exit 1
    fi
    if [ $NESTMON = 1 ]; then
        echo "building release nestmon..." >&2
        (cd "$ROOT" && cargo build --release -q -p monitor) || { echo "cargo build failed" >&2; exit 1; }
    fi
    make -s --no-print-directory -C "$ROOT/guests" "$MAKE_TARGET" OUT="$OUT" ||
        { echo "building $GUEST_SRC failed" >&2; exit 1; }

    # The host TSC rate (ticks per second), empty when it cannot be measured.
    HOST_HZ=""
    if ${HOST_CC:-cc} -O2 -o "$OUT/tsc_rate" "$ROOT/benches/events/tsc_rate.c" 2>"$OUT/tsc_rate.err"; then
        HOST_HZ=$("$OUT/tsc_rate")
    else
        echo "warning: cannot build benches/events/tsc_rate.c with ${HOST_CC:-cc}; host TSC rate unknown" >&2
    fi
}

# pe_run KIND N: one run into $OUT/KIND.N.out.  The guest prints "# tsc-mark T"
# at the start and the end of its measurements; the read loop adds the
# host time at which each of those lines arrived ("# wall-mark SECONDS T"),
# from which the guest's TSC rate follows.  Returns 0 when the guest exited
# as a passing guest does (its rt_exit(0): status 1 under QEMU's
# isa-debug-exit convention, which nestmon follows here with
# --exit-status qemu so both runs read alike).
pe_run() {
    kind=$1 n=$2
    out=$OUT/$kind.$n.out
    {
        case $kind in
        nestmon) eval "timeout \"\$TIMEOUT\" \"\$NESTMON_BIN\" run ${NESTMON_ARGS:-} --exit-status qemu --kernel \"\$GUEST\" --append \"\$APPEND\"" 2>"$OUT/$kind.$n.err" </dev/null ;;
        qemu) timeout "$TIMEOUT" "$QEMU_BIN" -kernel "$GUEST" -append "$APPEND" -serial stdio -display none -nodefaults \
                -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 -no-reboot -m 128 \
                2>"$OUT/$kind.$n.err" </dev/null ;;
        esac
        echo $? >"$OUT/$kind.$n.status"
    } | while IFS= read -r line || [ -n "$line" ]; do
        case $line in
        "# tsc-mark "*) echo "# wall-mark $(date +%s.%N) ${line#\# tsc-mark }" ;;
        esac
        printf '%s\n' "$line"
    done >"$out"
    st=$(cat "$OUT/$kind.$n.status")
    case $st in
    1) return 0 ;;
    124) echo "$kind: timed out after $TIMEOUT s (see $out)" >&2 ;;
    3) echo "$kind: the guest reported failing events:" >&2; grep ' FAIL' "$out" >&2 ;;
    *) echo "$kind: exit status $st (see $out and $OUT/$kind.$n.err)" >&2; tail -5 "$OUT/$kind.$n.err" >&2 ;;
    esac
    return 1
}

# pe_results KIND: "event cycles" lines, the lowest over the runs ("FAIL" for an
# event that failed in any run), cycles converted to host ticks when the
# guest's TSC rate is off; and $OUT/KIND.rate: "guest_hz converted(0|1)".
pe_results() {
    kind=$1
    cat "$OUT/$kind".*.out | awk -v host="$HOST_HZ" -v ratefile="$OUT/$kind.rate" '
        /^# wall-mark / {
            # pairs of marks, one pair per run: the rate of the last pair
            if (have) { dt = $3 - w0; if (dt > 0) hz = ($4 - t0) / dt; have = 0 }
            else { w0 = $3; t0 = $4; have = 1 }
            next
        }
        /^#/ { next }
        NF >= 2 && $1 ~ /^[a-z0-9_]+$/ {
            if (!($1 in best)) { order[n++] = $1; best[$1] = $2; next }
            if ($2 == "FAIL" || best[$1] == "FAIL") { best[$1] = "FAIL"; next }
            if ($2 + 0 < best[$1] + 0) best[$1] = $2
        }
        END {
            conv = 0
            if (host > 0 && hz > 0 && (hz / host > 1.02 || hz / host < 0.98)) conv = 1
            printf "%.0f %d\n", hz, conv > ratefile
            for (i = 0; i < n; i++) {
                e = order[i]; v = best[e]
                if (v != "FAIL" && conv) v = sprintf("%.2f", v * host / hz)
                print e, v
            }
        }'
}

# The runs of the two VMMs alternate, so that a slow spell of the host
# (a busy neighbour, a frequency change) weighs on both alike.
pe_run_all() {
    KINDS=""
    [ $NESTMON = 1 ] && KINDS="nestmon"
    [ $DO_QEMU = 1 ] && KINDS="$KINDS qemu"
    for kind in $KINDS; do
        rm -f "$OUT/$kind".*.out "$OUT/$kind".*.status "$OUT/$kind".*.err "$OUT/$kind.rate"
    done
    FAILED=0
    i=1
    while [ $i -le "$RUNS" ]; do
        for kind in $KINDS; do
            echo "running $kind ($i/$RUNS)..." >&2
            pe_run $kind $i || FAILED=1
        done
        i=$((i + 1))
    done
    for kind in $KINDS; do
        pe_results $kind >"$OUT/$kind.results"
    done
}

# pe_table GOAL_AWK GOAL_TEXT: every event either VMM printed, in the
# guest's order: nestmon and QEMU cycles, their ratio and the goal mark
# (GOAL_AWK's goal(); FAIL when a run did not produce the event), the TSC
# rates, "GOAL_TEXT: met" or "not met, N of M events miss", then extra().
pe_table() {
    {
        [ $NESTMON = 1 ] && sed 's/^/n /' "$OUT/nestmon.results"
        [ $DO_QEMU = 1 ] && sed 's/^/q /' "$OUT/qemu.results"
    } | awk -v nrate="$( [ $NESTMON = 1 ] && cat "$OUT/nestmon.rate")" \
            -v qrate="$( [ $DO_QEMU = 1 ] && cat "$OUT/qemu.rate")" -v host="$HOST_HZ" \
            -v has_n=$NESTMON -v has_q=$DO_QEMU -v goal_text="$2" "$1"'
        function shown(v, conv) { return v == "" ? "-" : (conv && v != "FAIL" ? v "*" : v) }
        function rate(what, hz, conv) {
            if (hz > 0) printf "%s %.3f GHz%s\n", what, hz / 1e9, conv ? " (differs from the host: * = converted to host ticks)" : ""
            else printf "%s unknown (no complete run)\n", what
        }
        {
            if (!($2 in seen)) { seen[$2] = 1; order[n++] = $2; if (length($2) > wide) wide = length($2) }
            if ($1 == "n") nv[$2] = $3; else qv[$2] = $3
        }
        END {
            split(nrate, nr, " "); split(qrate, qr, " ")
            w = wide + 1 > 18 ? wide + 1 : 18
            printf "%-" w "s %12s %12s %8s  %s\n", "event", "nestmon", "qemu", "ratio", "goal"
            miss = 0
            for (i = 0; i < n; i++) {
                e = order[i]; a = nv[e]; b = qv[e]; r = "-"; g = "-"
                if (has_n && has_q) {
                    if (a == "" || a == "FAIL" || b == "" || b == "FAIL") g = "FAIL"
                    else {
                        if (b > 0) r = sprintf("%.2f", a / b)
                        g = goal(e, a, b)
                    }
                    if (g != "ok") miss++
                }
                printf "%-" w "s %12s %12s %8s  %s\n", e, shown(a, nr[2]), shown(b, qr[2]), r, g
            }
            printf "\n"
            if (host > 0) printf "host TSC: %.3f GHz\n", host / 1e9
            if (has_n) rate("nestmon guest TSC:", nr[1], nr[2])
            if (has_q) rate("qemu guest TSC:   ", qr[1], qr[2])
            if (has_n && has_q) {
                if (miss) printf "%s: not met, %d of %d events miss\n", goal_text, miss, n
                else printf "%s: met\n", goal_text
            }
            extra()
        }'
}
