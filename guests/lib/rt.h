/* nestmon guest runtime: the API every test guest and benchmark workload is
 * written against.  Two back ends are selected at build time:
 *   guest  (RT_GUEST)  - Multiboot v1 kernel: COM1 output, exit via port 0xf4
 *   native (RT_NATIVE) - static i386 Linux program: write(1), exit_group
 * A program written against this header prints identical bytes either way.
 * Lines beginning with '#' are informational (timings etc.) and are ignored
 * when outputs are compared. */
#ifndef NESTMON_RT_H
#define NESTMON_RT_H

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef unsigned int uintptr_t;
typedef int intptr_t;
typedef unsigned int size_t;
typedef int ptrdiff_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)

void rt_putc(char c);
void rt_puts(const char *s);
/* %d %i %u %x %X %c %s %p %%, flags '0' '-', width, 'l' (ignored) and
 * 'll' (64-bit: %lld %llu %llx). */
void rt_printf(const char *fmt, ...);
void rt_exit(int code) __attribute__((noreturn));

/* Helpers (not part of the frozen API, but always available). */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
/* 1 when built as a Multiboot guest, 0 when built as a native program. */
extern const int rt_is_guest;

static inline uint64_t rt_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* Simple test bookkeeping used by the test guests. */
extern int rt_checks, rt_failures;
#define RT_CHECK(cond, ...)                                                 \
    do {                                                                    \
        rt_checks++;                                                        \
        if (!(cond)) {                                                      \
            rt_failures++;                                                  \
            rt_printf("FAIL %s:%d: ", __FILE__, __LINE__);                  \
            rt_printf(__VA_ARGS__);                                         \
            rt_putc('\n');                                                  \
        }                                                                   \
    } while (0)
/* Prints "NAME: PASS (n checks)" and exits 0, or a failure line and exits 1. */
void rt_finish(const char *name) __attribute__((noreturn));

#endif
