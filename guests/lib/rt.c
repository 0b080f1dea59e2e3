/* Back-end independent part of the nestmon guest runtime: formatting,
 * memory helpers, the 64-bit division helpers normally found in libgcc. */
#include "rt.h"

int rt_checks, rt_failures;

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    if (p < q) {
        while (n--)
            *p++ = *q++;
    } else {
        while (n--)
            p[n] = q[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* ---- 64-bit division (libgcc replacements) ---- */
static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t q = 0;
    if (d == 0) {
        /* Mimic a divide error without an IDT: just return all-ones. */
        if (rem)
            *rem = n;
        return ~0ULL;
    }
    if ((d >> 32) == 0 && (n >> 32) < d) {
        /* Fast path: one 64/32 hardware divide. */
        uint32_t lo = (uint32_t)n, hi = (uint32_t)(n >> 32), dd = (uint32_t)d;
        uint32_t qq, rr;
        __asm__("divl %4" : "=a"(qq), "=d"(rr) : "a"(lo), "d"(hi), "rm"(dd));
        if (rem)
            *rem = rr;
        return qq;
    }
    if ((d >> 32) == 0) {
        uint32_t dd = (uint32_t)d;
        uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n;
        uint32_t qhi = hi / dd, r = hi % dd, qlo, rr;
        __asm__("divl %4" : "=a"(qlo), "=d"(rr) : "a"(lo), "d"(r), "rm"(dd));
        if (rem)
            *rem = rr;
        return ((uint64_t)qhi << 32) | qlo;
    }
    {
        int shift = 0;
        while (!(d & (1ULL << 63)) && d <= n) {
            d <<= 1;
            shift++;
        }
        while (shift-- >= 0) {
            q <<= 1;
            if (n >= d) {
                n -= d;
                q |= 1;
            }
            d >>= 1;
        }
        if (rem)
            *rem = n;
        return q;
    }
}

uint64_t __udivdi3(uint64_t n, uint64_t d) { return udivmod64(n, d, 0); }
uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *r) { return udivmod64(n, d, r); }
int64_t __divdi3(int64_t n, int64_t d)
{
    int neg = (n < 0) ^ (d < 0);
    uint64_t q = udivmod64(n < 0 ? -(uint64_t)n : (uint64_t)n,
                           d < 0 ? -(uint64_t)d : (uint64_t)d, 0);
    return neg ? -(int64_t)q : (int64_t)q;
}
int64_t __moddi3(int64_t n, int64_t d)
{
    uint64_t r;
    udivmod64(n < 0 ? -(uint64_t)n : (uint64_t)n,
              d < 0 ? -(uint64_t)d : (uint64_t)d, &r);
    return n < 0 ? -(int64_t)r : (int64_t)r;
}
int64_t __divmoddi4(int64_t n, int64_t d, int64_t *r)
{
    int64_t q = __divdi3(n, d);
    *r = n - q * d;
    return q;
}

/* ---- output ---- */
void rt_puts(const char *s)
{
    while (*s)
        rt_putc(*s++);
}

static void put_padded(const char *s, int len, int width, int left, char pad)
{
    int n = width - len;
    if (!left)
        while (n-- > 0)
            rt_putc(pad);
    while (len--)
        rt_putc(*s++);
    if (left)
        while (n-- > 0)
            rt_putc(' ');
}

static int fmt_u64(char *buf, uint64_t v, unsigned base, int upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0, i;
    if (v == 0)
        tmp[n++] = '0';
    while (v) {
        uint64_t q;
        unsigned r;
        if (base == 16) {
            r = (unsigned)(v & 15);
            q = v >> 4;
        } else {
            uint64_t rr;
            q = udivmod64(v, base, &rr);
            r = (unsigned)rr;
        }
        tmp[n++] = digits[r];
        v = q;
    }
    for (i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static void rt_vprintf(const char *fmt, va_list ap)
{
    char buf[32];
    for (; *fmt; fmt++) {
        int left = 0, width = 0, lng = 0, len;
        char pad = ' ';
        if (*fmt != '%') {
            rt_putc(*fmt);
            continue;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '-')
                left = 1;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = lng >= 2 ? va_arg(ap, int64_t) : (int64_t)va_arg(ap, int);
            int neg = v < 0;
            uint64_t u = neg ? -(uint64_t)v : (uint64_t)v;
            len = 0;
            if (neg)
                buf[len++] = '-';
            len += fmt_u64(buf + len, u, 10, 0);
            if (neg && pad == '0' && !left && width > len) {
                rt_putc('-');
                put_padded(buf + 1, len - 1, width - 1, 0, '0');
            } else {
                put_padded(buf, len, width, left, left ? ' ' : pad);
            }
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = lng >= 2 ? va_arg(ap, uint64_t) : (uint64_t)va_arg(ap, unsigned);
            len = fmt_u64(buf, v, *fmt == 'u' ? 10 : 16, *fmt == 'X');
            put_padded(buf, len, width, left, left ? ' ' : pad);
            break;
        }
        case 'p': {
            uint32_t v = (uint32_t)va_arg(ap, void *);
            buf[0] = '0';
            buf[1] = 'x';
            len = 2 + fmt_u64(buf + 2, v, 16, 0);
            put_padded(buf, len, width, left, ' ');
            break;
        }
        case 'c':
            buf[0] = (char)va_arg(ap, int);
            put_padded(buf, 1, width, left, ' ');
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            put_padded(s, (int)strlen(s), width, left, ' ');
            break;
        }
        case '%':
            rt_putc('%');
            break;
        case 0:
            return;
        default:
            rt_putc('%');
            rt_putc(*fmt);
            break;
        }
    }
}

void rt_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rt_vprintf(fmt, ap);
    va_end(ap);
}

void rt_finish(const char *name)
{
    if (rt_failures) {
        rt_printf("%s: FAILED (%d of %d checks failed)\n", name, rt_failures, rt_checks);
        rt_exit(1);
    }
    rt_printf("%s: PASS (%d checks)\n", name, rt_checks);
    rt_exit(0);
}
