#!/bin/sh
# Runs built guests and compares their output with expected/NAME.out.
#   check.sh qemu|native|regen OUT EXPECTED_DIR "NATIVE_NAMES" NAME...
# Lines starting with '#' are informational and ignored in comparisons.
# A guest passes when its filtered output equals the expected file and it
# exits with rt_exit(0): status 1 under qemu ((0 << 1) | 1), 0 natively.
mode=$1 out=$2 exp=$3 natives=$4
shift 4
QEMU=${QEMU:-qemu-system-i386}
fail=0
filter() { grep -v '^#' || true; }
run_qemu() {
    timeout 60 "$QEMU" -kernel "$1" -serial stdio -display none -nodefaults -monitor none \
        -device isa-debug-exit,iobase=0xf4,iosize=4 -no-reboot -m 128 </dev/null
}
is_native() { case " $natives " in *" $1 "*) return 0;; esac; return 1; }
for n in "$@"; do
    case $mode in
    regen)
        if is_native "$n"; then "$out/$n.native" | filter >"$exp/$n.out"
        else run_qemu "$out/$n.elf" | filter >"$exp/$n.out"; fi
        echo "regenerated $exp/$n.out"
        continue;;
    esac
    if [ ! -f "$exp/$n.out" ]; then echo "FAIL $n: no $exp/$n.out"; fail=1; continue; fi
    if [ "$mode" = qemu ]; then
        run_qemu "$out/$n.elf" >"$out/$n.qemu.log" 2>"$out/$n.qemu.err"
        st=$?
        if [ $st -ne 1 ]; then echo "FAIL $n (qemu): exit status $st, want 1"; fail=1
        elif ! filter <"$out/$n.qemu.log" | cmp -s - "$exp/$n.out"; then
            echo "FAIL $n (qemu): output differs from $exp/$n.out (see $out/$n.qemu.log)"; fail=1
        else echo "ok   $n (qemu)"; fi
    fi
    if is_native "$n"; then
        "$out/$n.native" >"$out/$n.native.log" 2>&1
        st=$?
        if [ $st -ne 0 ]; then echo "FAIL $n (native): exit status $st, want 0"; fail=1
        elif ! filter <"$out/$n.native.log" | cmp -s - "$exp/$n.out"; then
            echo "FAIL $n (native): output differs from $exp/$n.out (see $out/$n.native.log)"; fail=1
        else echo "ok   $n (native)"; fi
    fi
done
exit $fail
