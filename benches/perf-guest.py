#!/usr/bin/env python3
"""Names the guest code that perf's samples of translated code fall in.

    NESTMON_PERF_MAP=1 perf record -o perf.data target/release/nestmon run ...
    perf script -i perf.data -F ip,dso,sym,period | benches/perf-guest.py /tmp/perf-PID.map [N]

perf cannot name samples in translated code itself (the code cache is
the memfd `nestmon-code-cache`, not anonymous memory, so perf does not
read its map for it); nestmon writes one line per translation to
/tmp/perf-PID.map when NESTMON_PERF_MAP is set ("HOST LEN
guest_EIP_modeM_offO"), and this script matches the samples' addresses.
Prints the N (default 30) translations with the most samples: share of
all samples, share of the samples in translated code, guest EIP, mode.
A code cache that was flushed reuses addresses: a sample is given to the
last translation made at its address.
"""
import bisect
import re
import sys


def load_map(path):
    units = {}
    for line in open(path):
        parts = line.split()
        if len(parts) != 3:
            continue
        m = re.match(r"guest_([0-9a-f]+)_mode([0-9a-f]+)_off([0-9a-f]+)$", parts[2])
        if not m:
            continue
        start, length = int(parts[0], 16), int(parts[1], 16)
        units[start] = (length, m.group(1), m.group(2))
    starts = sorted(units)
    return starts, units


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    starts, units = load_map(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    counts, total, jit = {}, 0, 0
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        total += 1
        if "nestmon-code-cache" not in line:
            continue
        jit += 1
        # perf prints the period before or after the address depending
        # on its version: the address is the token inside a translation.
        ip, i = None, -1
        for token in parts:
            try:
                value = int(token, 16)
            except ValueError:
                continue
            i = bisect.bisect_right(starts, value) - 1
            if i >= 0:
                ip = value
                break
        if ip is None:
            continue
        start = starts[i]
        length, eip, mode = units[start]
        key = (eip, mode) if ip < start + length else ("stubs/unknown", "-")
        counts[key] = counts.get(key, 0) + 1
    print(f"samples: {total}, in translated code: {jit}")
    for (eip, mode), n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * n / max(total, 1):6.2f}% {100 * n / max(jit, 1):6.2f}%  eip {eip} mode {mode}")


if __name__ == "__main__":
    main()
