/* Guest-only helpers (port I/O, Multiboot info).  Programs including this
 * header are not native-capable. */
#ifndef NESTMON_GUEST_H
#define NESTMON_GUEST_H
#include "rt.h"

extern uint32_t rt_mb_magic, rt_mb_info;

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
#endif
