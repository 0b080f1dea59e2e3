/* hello: the smallest guest; checks the runtime's formatting. */
#include "rt.h"

int main(void)
{
    rt_puts("hello from a nestmon guest\n");
    rt_printf("d=%d u=%u x=%x 08x=%08x s=%s c=%c\n", -42, 3000000000u, 0xbeef, 0x1234, "str", 'Z');
    rt_printf("llx=%llx llu=%llu lld=%lld\n", 0x123456789abcdef0ULL, 18446744073709551615ULL, -9000000000LL);
    rt_printf("w=[%5d] [%-5d] [%05d] [%-4s] [%3c]\n", 42, 42, -42, "ab", 'x');
    rt_printf("div64: %llu %llu %lld %lld\n", 1000000000000ULL / 7, 1000000000000ULL % 7,
              -1000000000000LL / 13, -1000000000000LL % 13);
    return 0;
}
