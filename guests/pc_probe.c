/* pc_probe: what a kernel probes of the PC platform around it.
 * nestmon: guest-only (port I/O)
 *
 * CMOS (memory sizes, equipment byte, the RTC's registers and date), the
 * i8042 keyboard controller (self-test, interface test, command byte,
 * disable/enable, output port), PCI configuration mechanism #1 (the host
 * bridge at 00:00.0, byte lanes, absent functions) and QEMU's fw_cfg
 * (signature, features, CPU count, RAM size).
 *
 * Its output must be the same under nestmon and qemu-system-i386 -m 128
 * (see guests/expected/pc_probe.out), so it prints only what both
 * machines agree on; where QEMU's PC has more than nestmon can honestly
 * provide, the line starts with '#' (informational, not compared) or is
 * not printed, and a comment says why:
 *   - QEMU's PCI bus also holds the PIIX3 at 00:01.0-3, nestmon's has
 *     the host bridge only: 00:01.0 is a '#' line;
 *   - QEMU's equipment byte also has bit 2 (PS/2 mouse), nestmon has no
 *     mouse: only bits 0-1 are printed;
 *   - QEMU (with SeaBIOS) leaves the CMOS checksum at 0x2e/0x2f zero,
 *     nestmon keeps the standard one: a '#' line;
 *   - QEMU offers fw_cfg DMA and files, nestmon neither: '#' lines;
 *   - the date and time differ between runs, and whether polling catches
 *     the RTC's update-in-progress window depends on the host's load:
 *     '#' lines.
 * Everything printed without '#' is what a real 440FX/PIIX PC (or QEMU's
 * model of one) gives.
 */
#include "guest.h"

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ __volatile__("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ __volatile__("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* ---- CMOS / RTC ---- */

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define NMI_DISABLE 0x80

static uint8_t cmos(uint8_t index)
{
    outb(CMOS_INDEX, index);
    return inb(CMOS_DATA);
}

static uint16_t cmos16(uint8_t index)
{
    return cmos(index) | (uint16_t)cmos(index + 1) << 8;
}

static unsigned from_bcd(uint8_t v, bool binary)
{
    return binary ? v : (v >> 4) * 10 + (v & 0x0f);
}

/* Waits (bounded by the TSC: a few seconds at any clock rate a host has)
 * for register A's update-in-progress flag to be `want`; true if it is. */
static bool wait_uip(bool want)
{
    uint64_t start = rt_rdtsc();
    while (rt_rdtsc() - start < 8000000000ULL)
        if (((cmos(0x0a) & 0x80) != 0) == want)
            return true;
    return false;
}

struct rtc_time {
    unsigned sec, min, hour, wday, mday, mon, year;
};

static void rtc_read(struct rtc_time *t)
{
    uint8_t b = cmos(0x0b);
    bool binary = b & 0x04, h24 = b & 0x02;
    uint8_t hour = cmos(0x04);
    t->sec = from_bcd(cmos(0x00), binary);
    t->min = from_bcd(cmos(0x02), binary);
    t->hour = from_bcd(hour & 0x7f, binary);
    if (!h24)
        t->hour = t->hour % 12 + ((hour & 0x80) ? 12 : 0);
    t->wday = from_bcd(cmos(0x06), binary);
    t->mday = from_bcd(cmos(0x07), binary);
    t->mon = from_bcd(cmos(0x08), binary);
    t->year = from_bcd(cmos(0x32), binary) * 100 + from_bcd(cmos(0x09), binary);
}

static void probe_cmos(void)
{
    rt_printf("cmos index port reads: %02x\n", inb(CMOS_INDEX));
    /* Index with NMI disabled: the data is the same register. */
    outb(CMOS_INDEX, NMI_DISABLE | 0x15);
    uint8_t base_lo = inb(CMOS_DATA);
    outb(CMOS_INDEX, 0x0d); /* NMI enabled again, register D */
    inb(CMOS_DATA);
    uint16_t base = base_lo | (uint16_t)cmos(0x16) << 8;
    uint16_t ext = cmos16(0x17), ext_post = cmos16(0x30), above16 = cmos16(0x34);
    rt_printf("cmos base memory: %u KiB\n", base);
    rt_printf("cmos extended memory: %u KiB (0x17), %u KiB (0x30)\n", ext, ext_post);
    rt_printf("cmos memory above 16 MiB: %u blocks of 64 KiB (%u MiB)\n", above16, above16 / 16);
    RT_CHECK(base == 640, "base memory %u", base);
    RT_CHECK(ext == ext_post, "0x17 %u, 0x30 %u", ext, ext_post);
    /* QEMU also sets bit 2 (a PS/2 mouse); nestmon has none. */
    uint8_t equipment = cmos(0x14);
    rt_printf("cmos equipment: FPU %s, floppy drives %s\n", (equipment & 2) ? "yes" : "no",
              (equipment & 1) ? "yes" : "no");
    /* QEMU leaves the checksum zero; nestmon keeps the standard one. */
    uint16_t sum = 0;
    for (uint8_t i = 0x10; i <= 0x2d; i++)
        sum += cmos(i);
    uint16_t stored = (uint16_t)cmos(0x2e) << 8 | cmos(0x2f);
    rt_printf("# cmos checksum 0x10-0x2d: computed %04x, stored %04x (%s)\n", sum, stored,
              sum == stored ? "valid" : "not kept");

    rt_printf("rtc register A: %02x (UIP masked)\n", cmos(0x0a) & 0x7f);
    rt_printf("rtc register B: %02x\n", cmos(0x0b));
    rt_printf("rtc register D: %02x\n", cmos(0x0d));
    /* The clock runs: the seconds register changes, and UIP never stays
     * set. Whether polling catches UIP set (244 us before each update and
     * the update cycle after it in nestmon and on an MC146818, the 244 us
     * in QEMU) depends on how often the guest gets to poll, which a loaded
     * host changes: that is a '#' line. */
    uint8_t first = cmos(0x00);
    unsigned updates = 0;
    bool seen_uip = false;
    uint64_t start = rt_rdtsc();
    while (rt_rdtsc() - start < 8000000000ULL && updates < 2 && !(updates && seen_uip)) {
        if (cmos(0x0a) & 0x80)
            seen_uip = true;
        uint8_t now = cmos(0x00);
        if (now != first) {
            updates++;
            first = now;
        }
    }
    bool clears = wait_uip(false);
    rt_printf("rtc seconds advance: %s\n", updates ? "yes" : "no");
    rt_printf("rtc update-in-progress clears: %s\n", clears ? "yes" : "no");
    rt_printf("# rtc update-in-progress seen set while polling: %s\n", seen_uip ? "yes" : "no");
    RT_CHECK(updates && clears, "updates %u, UIP clears %d", updates, clears);

    /* Read the time twice, just after an update, until both agree. */
    struct rtc_time t, again;
    int tries = 0;
    do {
        wait_uip(false);
        rtc_read(&t);
        rtc_read(&again);
    } while (memcmp(&t, &again, sizeof t) != 0 && ++tries < 5);
    static const uint8_t month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool sane = t.year >= 2024 && t.year < 2100 && t.mon >= 1 && t.mon <= 12 && t.mday >= 1 &&
                t.mday <= month_days[(t.mon - 1) % 12] && t.wday >= 1 && t.wday <= 7 &&
                t.hour < 24 && t.min < 60 && t.sec < 60;
    rt_printf("# rtc date: %04u-%02u-%02u %02u:%02u:%02u UTC, weekday %u (1 = Sunday)\n", t.year,
              t.mon, t.mday, t.hour, t.min, t.sec, t.wday);
    rt_printf("rtc date in range (year >= 2024, every field valid): %s\n", sane ? "yes" : "no");
    RT_CHECK(sane, "rtc date");
}

/* ---- i8042 ---- */

#define KBC_DATA 0x60
#define KBC_STATUS 0x64
#define KBC_COMMAND 0x64
#define OBF 0x01
#define IBF 0x02

static void kbc_command(uint8_t command)
{
    while (inb(KBC_STATUS) & IBF)
        ;
    outb(KBC_COMMAND, command);
}

static void kbc_data(uint8_t value)
{
    while (inb(KBC_STATUS) & IBF)
        ;
    outb(KBC_DATA, value);
}

/* The controller's answer, or -1 when none comes. */
static int kbc_answer(void)
{
    for (int i = 0; i < 100000; i++)
        if (inb(KBC_STATUS) & OBF)
            return inb(KBC_DATA);
    return -1;
}

static int kbc_ask(uint8_t command)
{
    kbc_command(command);
    return kbc_answer();
}

static void probe_i8042(void)
{
    while (inb(KBC_STATUS) & OBF)
        inb(KBC_DATA);
    uint8_t st = inb(KBC_STATUS);
    rt_printf("i8042 status: output buffer %s, system flag %s\n", (st & OBF) ? "full" : "empty",
              (st & 0x04) ? "set" : "clear");
    int self = kbc_ask(0xaa);
    rt_printf("i8042 self-test: %02x\n", self);
    RT_CHECK(self == 0x55, "self-test %x", self);
    rt_printf("i8042 keyboard interface test: %02x\n", kbc_ask(0xab));
    uint8_t st2 = inb(KBC_STATUS);
    int again = inb(KBC_DATA);
    rt_printf("i8042 port 0x60 with nothing pending: %02x, output buffer %s\n", again,
              (st2 & OBF) ? "full" : "empty");

    int saved = kbc_ask(0x20);
    kbc_command(0x60);
    kbc_data(0x45);
    int written = kbc_ask(0x20);
    rt_printf("i8042 command byte: wrote 45, read %02x\n", written);
    kbc_command(0xad);
    int disabled = kbc_ask(0x20);
    kbc_command(0xae);
    int enabled = kbc_ask(0x20);
    rt_printf("i8042 keyboard disable sets bit 4: %s, enable clears it: %s\n",
              (disabled & 0x10) ? "yes" : "no", (enabled & 0x10) ? "no" : "yes");
    kbc_command(0x60);
    kbc_data((uint8_t)saved);
    RT_CHECK(kbc_ask(0x20) == saved, "command byte restored");

    int port = kbc_ask(0xd0);
    rt_printf("i8042 output port: reset line %s, A20 %s\n", (port & 1) ? "high" : "low",
              (port & 2) ? "enabled" : "disabled");
}

/* ---- PCI ---- */

#define PCI_ADDRESS 0xcf8
#define PCI_DATA 0xcfc

static uint32_t pci_address(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
    return 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (reg & 0xfc);
}

static uint32_t pci_read(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
    outl(PCI_ADDRESS, pci_address(bus, dev, fn, reg));
    return inl(PCI_DATA);
}

static void probe_pci(void)
{
    outl(PCI_ADDRESS, 0x80000000u);
    rt_printf("pci config address reads back: %08x\n", inl(PCI_ADDRESS));
    uint32_t id = pci_read(0, 0, 0, 0x00);
    uint32_t class = pci_read(0, 0, 0, 0x08) >> 8;
    outl(PCI_ADDRESS, pci_address(0, 0, 0, 0x0c));
    uint8_t header = inb(PCI_DATA + 2);
    rt_printf("pci 00:00.0: vendor %04x device %04x class %06x header type %02x\n", id & 0xffff,
              id >> 16, class, header);
    outl(PCI_ADDRESS, pci_address(0, 0, 0, 0x00));
    uint8_t lane1 = inb(PCI_DATA + 1);
    uint16_t upper = inw(PCI_DATA + 2);
    rt_printf("pci 00:00.0 byte lanes: 0xcfd %02x, 0xcfe %04x\n", lane1, upper);
    RT_CHECK(id == 0x12378086u, "host bridge id %x", id);
    RT_CHECK(class == 0x060000, "host bridge class %x", class);
    /* QEMU's 00:01.0 is the PIIX3 ISA bridge; nestmon has no ISA bridge. */
    uint32_t isa = pci_read(0, 1, 0, 0x00);
    if (isa == 0xffffffffu)
        rt_printf("# pci 00:01.0: absent\n");
    else
        rt_printf("# pci 00:01.0: vendor %04x device %04x\n", isa & 0xffff, isa >> 16);
    /* The 440FX is single-function; -nodefaults leaves 00:02.0 without VGA. */
    static const struct { unsigned bus, dev, fn; } absent[] = {{0, 0, 1}, {0, 2, 0}, {1, 0, 0}};
    for (unsigned i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        uint32_t v = pci_read(absent[i].bus, absent[i].dev, absent[i].fn, 0);
        rt_printf("pci %02x:%02x.%u: %s\n", absent[i].bus, absent[i].dev, absent[i].fn,
                  v == 0xffffffffu ? "absent (all ones)" : "present");
    }
    outl(PCI_ADDRESS, 0);
    rt_printf("pci data with the enable bit clear: %08x\n", inl(PCI_DATA));
}

/* ---- fw_cfg ---- */

#define FW_CFG_SELECTOR 0x510
#define FW_CFG_DATA 0x511

static void fw_cfg_read(uint16_t key, void *buf, unsigned len)
{
    outw(FW_CFG_SELECTOR, key);
    for (unsigned i = 0; i < len; i++)
        ((uint8_t *)buf)[i] = inb(FW_CFG_DATA);
}

static void probe_fw_cfg(uint16_t cmos_above16)
{
    char sig[5] = {0};
    fw_cfg_read(0x00, sig, 4);
    rt_printf("fw_cfg signature: %s\n", sig);
    RT_CHECK(memcmp(sig, "QEMU", 4) == 0, "fw_cfg signature");
    uint32_t features;
    fw_cfg_read(0x01, &features, 4);
    /* QEMU offers DMA (bit 1) as well; nestmon only the I/O ports. */
    rt_printf("fw_cfg traditional interface: %s\n", (features & 1) ? "yes" : "no");
    rt_printf("# fw_cfg DMA interface: %s\n", (features & 2) ? "yes" : "no");
    uint8_t cpus[3];
    uint16_t max_cpus;
    fw_cfg_read(0x05, cpus, 3);
    fw_cfg_read(0x0f, &max_cpus, 2);
    rt_printf("fw_cfg cpus: %u, max cpus: %u, byte past the end: %02x\n", cpus[0] | cpus[1] << 8,
              max_cpus, cpus[2]);
    uint64_t ram;
    fw_cfg_read(0x03, &ram, 8);
    rt_printf("fw_cfg ram size: %llu MiB\n", ram >> 20);
    uint64_t cmos_ram = (16ULL << 20) + ((uint64_t)cmos_above16 << 16);
    rt_printf("fw_cfg ram size matches cmos: %s\n", ram == cmos_ram ? "yes" : "no");
    RT_CHECK(ram == cmos_ram, "fw_cfg %llx cmos %llx", ram, cmos_ram);
    uint8_t count[4];
    fw_cfg_read(0x19, count, 4);
    rt_printf("# fw_cfg files: %u\n",
              (uint32_t)count[0] << 24 | count[1] << 16 | count[2] << 8 | count[3]);
    uint8_t absent[2];
    fw_cfg_read(0x1234, absent, 2);
    rt_printf("fw_cfg absent item reads: %02x %02x\n", absent[0], absent[1]);
}

int main(void)
{
    probe_cmos();
    probe_i8042();
    probe_pci();
    probe_fw_cfg(cmos16(0x34));
    rt_finish("pc_probe");
}
