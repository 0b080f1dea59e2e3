/* Native back end: a static i386 Linux program using raw int 0x80 system
 * calls.  Output is buffered and flushed at exit (and when full). */
#include "rt.h"

const int rt_is_guest = 0;

static char outbuf[4096];
static unsigned outlen;

static int sys3(int nr, int a, int b, int c)
{
    int ret;
    __asm__ __volatile__("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static void flush(void)
{
    unsigned off = 0;
    while (off < outlen) {
        int n = sys3(4 /* write */, 1, (int)(outbuf + off), (int)(outlen - off));
        if (n <= 0)
            break;
        off += (unsigned)n;
    }
    outlen = 0;
}

void rt_serial_init(void) {}

void rt_putc(char c)
{
    outbuf[outlen++] = c;
    if (outlen == sizeof(outbuf))
        flush();
}

void rt_exit(int code)
{
    flush();
    for (;;)
        sys3(252 /* exit_group */, code, 0, 0);
}
