/* tsc_rate: the host's TSC frequency, for benches/run-events.sh.
 *
 * A host (x86-64 Linux) program, not a guest: it reads the TSC and
 * CLOCK_MONOTONIC, busy-waits 200 ms of CLOCK_MONOTONIC, reads both again
 * and prints the TSC ticks per second as an integer.  The script compares
 * this with the rate at which each VMM's guest sees its TSC advance, to
 * know whether guest "cycles" are host TSC ticks. */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    double t0 = now(), t1;
    unsigned long long c0 = __rdtsc(), c1;
    do
        t1 = now();
    while (t1 - t0 < 0.2);
    c1 = __rdtsc();
    printf("%.0f\n", (double)(c1 - c0) / (t1 - t0));
    return 0;
}
