/* pc_reset: a PC's reset button, pressed by the guest itself.
 * nestmon: guest-only (port I/O)
 * nestmon: no-qemu (check-qemu runs QEMU with -no-reboot, which ends at the
 * reset; run by hand without it, QEMU prints the same two boots)
 *
 * First boot: CMOS byte 0x7e does not hold the marker; the guest writes it
 * there and pulses the CPU's reset line through the i8042 keyboard
 * controller (command 0xFE to port 0x64). A PC (and QEMU, and nestmon
 * without --no-reboot) boots the same kernel again with fresh RAM and
 * devices but with its battery-backed CMOS as the guest left it. Second
 * boot: the marker is there; the guest clears it and reports success.
 *
 * RAM does not survive the reset: a static variable set on the first boot
 * reads its initial value on the second. Under --no-reboot the run ends at
 * the reset with exit status 5 after the first boot's lines.
 */
#include "guest.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
/* A byte no BIOS layout uses (the user area at the top of the CMOS). */
#define MARKER_INDEX 0x7e
#define MARKER 0xa5

static unsigned boots_seen_in_ram;

static uint8_t cmos_read(uint8_t index)
{
    outb(CMOS_INDEX, index);
    return inb(CMOS_DATA);
}

static void cmos_write(uint8_t index, uint8_t value)
{
    outb(CMOS_INDEX, index);
    outb(CMOS_DATA, value);
}

int main(void)
{
    boots_seen_in_ram++;
    if (cmos_read(MARKER_INDEX) != MARKER) {
        rt_printf("first boot: boots seen in RAM %u; marking CMOS and resetting\n",
                  boots_seen_in_ram);
        cmos_write(MARKER_INDEX, MARKER);
        outb(0x64, 0xfe);
        /* Reached only if the reset line does nothing. */
        rt_puts("FAIL the reset line did not reset the machine\n");
        return 1;
    }
    rt_printf("second boot: boots seen in RAM %u; CMOS marker kept\n", boots_seen_in_ram);
    cmos_write(MARKER_INDEX, 0);
    RT_CHECK(cmos_read(MARKER_INDEX) == 0, "the marker was not cleared");
    rt_finish("pc_reset");
}
