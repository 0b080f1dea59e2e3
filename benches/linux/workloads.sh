# Workloads of benches/run-linux.sh, run by busybox's ash: inside Debian's
# i386 kernel under nestmon and under QEMU (as /bench/workloads.sh of the
# initramfs), and natively on the host with the same static i386 busybox.
#
#   sh workloads.sh RUNS MIB BIN DIR
#
#   RUNS  how many times each workload runs (the caller keeps the best)
#   MIB   size of the data the checksum, compression and pipe workloads
#         read (made by seq, so it compresses like text)
#   BIN   directory holding busybox's applets (`true` is exec'd from it)
#   DIR   scratch directory on a tmpfs (removed at the end)
#
# For every run of every workload it prints
#   nestmon-bench: NAME RUN NANOSECONDS
# timed with the machine's own monotonic clock (the "now at" line of
# /proc/timer_list, or /proc/uptime's 10 ms when that cannot be read), and
# once per workload
#   nestmon-bench-check: NAME TEXT
# with what the workload computed, which must be the same everywhere.
# Only shell builtins run between the two looks at the clock and the
# workload itself.
#
# The workloads (data: MIB pieces of `seq 1 150000`, about 1 MiB each):
#   shell-loop  200,000 iterations of a `while [ ]` loop doing arithmetic
#               (ash builtins only: no fork, no system call per iteration)
#   checksum    md5sum and sha256sum of the data
#   gzip        gzip -6 of the data to a file
#   gunzip      gzip -d of that back to a file
#   fork-exec   1,000 fork+exec+wait of BIN/true (busybox, static)
#   pipes       cat (3 x the data) | tr | cat | md5sum: four processes,
#               three pipes

runs=$1 mib=$2 bin=$3 dir=$4

# Sets NOW to the monotonic time in nanoseconds, without a fork.
if [ -r /proc/timer_list ]; then
  now() { { read -r _; read -r _; read -r _ _ NOW _; } </proc/timer_list; }
else
  now() {
    read -r NOW _ </proc/uptime
    # "12.08": the hundredths with a leading 1, so 08 is not octal.
    NOW=$(( ${NOW%.*} * 1000000000 + (1${NOW#*.} - 100) * 10000000 ))
  }
fi

# time_it NAME COMMAND...: runs the command $runs times, printing each
# time.
time_it() {
  local name=$1 run=1 start
  shift
  while [ $run -le "$runs" ]; do
    now; start=$NOW
    "$@"
    now
    echo "nestmon-bench: $name $run $((NOW - start))"
    run=$((run + 1))
  done
}

shell_loop() {
  local i=0
  while [ $i -lt 200000 ]; do i=$((i + 1)); done
}

checksum() {
  md5sum "$dir/data" >"$dir/md5"
  sha256sum "$dir/data" >"$dir/sha256"
}

compress() { gzip -6 -c "$dir/data" >"$dir/data.gz"; }

decompress() { gzip -d -c "$dir/data.gz" >"$dir/data.out"; }

fork_exec() {
  local i=0
  while [ $i -lt 1000 ]; do "$bin/true"; i=$((i + 1)); done
}

pipes() {
  cat "$dir/data" "$dir/data" "$dir/data" | tr 0-9 a-j | cat | md5sum >"$dir/pipe.md5"
}

set -e
mkdir -p "$dir"
# About MIB MiB of "1\n2\n...": a line takes 7 bytes on average around
# 10^6, so 1 MiB is about 150,000 lines; one MiB-sized piece is repeated.
seq 1 150000 >"$dir/piece"
i=0
while [ $i -lt "$mib" ]; do cat "$dir/piece"; i=$((i + 1)); done >"$dir/data"
echo "nestmon-bench-check: data $(wc -c <"$dir/data") bytes"

time_it shell-loop shell_loop
time_it checksum checksum
echo "nestmon-bench-check: checksum $(cut -d' ' -f1 "$dir/md5") $(cut -d' ' -f1 "$dir/sha256")"
time_it gzip compress
echo "nestmon-bench-check: gzip $(wc -c <"$dir/data.gz") bytes"
time_it gunzip decompress
cmp "$dir/data" "$dir/data.out" && echo "nestmon-bench-check: gunzip identical"
time_it fork-exec fork_exec
time_it pipes pipes
echo "nestmon-bench-check: pipes $(cut -d' ' -f1 "$dir/pipe.md5")"
rm -rf "$dir"
