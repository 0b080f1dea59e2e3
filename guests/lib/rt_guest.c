/* Guest back end: COM1 (16550 at 0x3f8) output, exit through QEMU's
 * isa-debug-exit device at port 0xf4: nestmon exits with 0 for code 0 and
 * 1 otherwise; qemu-system-i386 (and nestmon --exit-status qemu) with
 * (code << 1) | 1. */
#include "rt.h"

const int rt_is_guest = 1;

#define COM1 0x3f8

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ __volatile__("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void rt_serial_init(void)
{
    outb(COM1 + 1, 0x00); /* IER: no interrupts */
    outb(COM1 + 3, 0x80); /* LCR: DLAB */
    outb(COM1 + 0, 0x01); /* DLL: 115200 baud */
    outb(COM1 + 1, 0x00); /* DLM */
    outb(COM1 + 3, 0x03); /* LCR: 8N1 */
    outb(COM1 + 4, 0x03); /* MCR: DTR | RTS */
}

void rt_putc(char c)
{
    unsigned spins = 0;
    /* LSR bit 5: transmit holding register empty. */
    while (!(inb(COM1 + 5) & 0x20) && ++spins < 1000000)
        ;
    outb(COM1, (uint8_t)c);
}

void rt_exit(int code)
{
    outb(0xf4, (uint8_t)code);
    for (;;)
        __asm__ __volatile__("cli; hlt");
}
