/* fpu: x87 floating point — a Mandelbrot set in long double (80-bit x87
 * arithmetic, compares, fistp). */
#include "rt.h"
#define W 640
#define H 400
#define MAXIT 2500
int main(void)
{
    int x, y, it;
    uint32_t total = 0, hash = 0;
    for (y = 0; y < H; y++) {
        long double ci = -1.2L + 2.4L * y / H;
        for (x = 0; x < W; x++) {
            long double cr = -2.1L + 3.0L * x / W, zr = 0, zi = 0, t;
            for (it = 0; it < MAXIT; it++) {
                long double zr2 = zr * zr, zi2 = zi * zi;
                if (zr2 + zi2 > 4.0L)
                    break;
                t = zr2 - zi2 + cr;
                zi = 2.0L * zr * zi + ci;
                zr = t;
            }
            total += it;
            hash = hash * 31 + it + (int)(zr * 16);
        }
    }
    rt_printf("fpu: mandelbrot %dx%d, %u iterations, hash %08x\n", W, H, total, hash);
    return 0;
}
