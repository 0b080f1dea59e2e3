/* backdoor: what a VMware Tools client does first, against nestmon's
 * backdoor: hypervisor CPUID leaf, GETVERSION, GuestRPC (RPCI) over the
 * low-bandwidth port, NESTING_CONTROL QUERY, and one message each way over
 * the high-bandwidth port.  One line per step; "backdoor: all ok" and exit
 * status 0 when every step passed, otherwise the failing step and exit 1.
 *
 * nestmon: guest-only (port I/O on 0x5658/0x5659)
 *
 * Numbers: open-vm-tools lib/include/backdoor_def.h and guest_msg_def.h. */
#include "rt.h"

#define BDOOR_MAGIC 0x564D5868u
#define BDOOR_PORT 0x5658u
#define BDOORHB_PORT 0x5659u
#define CMD_GETVERSION 10u
#define CMD_GETHWVERSION 17u
#define CMD_GETTIME 23u
#define CMD_GETUUID 19u
#define CMD_MESSAGE 30u
#define CMD_NESTING_CONTROL 63u
#define NESTING_QUERY 2u
#define HB_CMD_MESSAGE 0u

#define MSG_OPEN 0u
#define MSG_SENDSIZE 1u
#define MSG_SENDPAYLOAD 2u
#define MSG_RECVSIZE 3u
#define MSG_RECVPAYLOAD 4u
#define MSG_RECVSTATUS 5u
#define MSG_CLOSE 6u

#define ST_SUCCESS 0x0001u
#define ST_DORECV 0x0002u
#define ST_HB 0x0080u

#define PROTO_RPCI 0x49435052u
#define FLAG_COOKIE 0x80000000u

/* The register file of one backdoor access; field offsets are used by the
 * assembly below (eax 0, ebx 4, ecx 8, edx 12, esi 16, edi 20, ebp 24). */
struct regs {
    uint32_t eax, ebx, ecx, edx, esi, edi, ebp;
};

/* Loads every register from *r, runs INSN, stores every register back.
 * EBP cannot be named as an operand, so it is saved on the stack; the
 * pointer travels in EAX and is swapped with the result around INSN. */
#define BACKDOOR_ACCESS(name, insn)                                        \
    static void name(struct regs *r)                                       \
    {                                                                      \
        __asm__ __volatile__("pushl %%ebp\n\t"                             \
                             "pushl %%eax\n\t"                             \
                             "movl 24(%%eax), %%ebp\n\t"                   \
                             "movl 20(%%eax), %%edi\n\t"                   \
                             "movl 16(%%eax), %%esi\n\t"                   \
                             "movl 12(%%eax), %%edx\n\t"                   \
                             "movl 8(%%eax), %%ecx\n\t"                    \
                             "movl 4(%%eax), %%ebx\n\t"                    \
                             "movl 0(%%eax), %%eax\n\t"                    \
                             "cld\n\t" insn "\n\t"                         \
                             "xchgl %%eax, (%%esp)\n\t"                    \
                             "movl %%ebp, 24(%%eax)\n\t"                   \
                             "movl %%edi, 20(%%eax)\n\t"                   \
                             "movl %%esi, 16(%%eax)\n\t"                   \
                             "movl %%edx, 12(%%eax)\n\t"                   \
                             "movl %%ecx, 8(%%eax)\n\t"                    \
                             "movl %%ebx, 4(%%eax)\n\t"                    \
                             "popl 0(%%eax)\n\t"                           \
                             "popl %%ebp\n\t"                              \
                             : "+a"(r)                                     \
                             :                                             \
                             : "ebx", "ecx", "edx", "esi", "edi", "memory", \
                               "cc");                                      \
    }

BACKDOOR_ACCESS(port_in, "inl %%dx, %%eax")
BACKDOOR_ACCESS(port_rep_outsb, "rep outsb")
BACKDOOR_ACCESS(port_rep_insb, "rep insb")

static void fail(const char *step, const char *what, uint32_t value)
{
    rt_printf("%s: FAILED %s (0x%08x)\n", step, what, value);
    rt_printf("backdoor: FAILED\n");
    rt_exit(1);
}

static struct regs call(uint32_t command, uint32_t ebx)
{
    struct regs r = {BDOOR_MAGIC, ebx, command, BDOOR_PORT, 0, 0, 0};
    port_in(&r);
    return r;
}

struct channel {
    uint32_t id, cookie_high, cookie_low;
};

static struct regs message(const struct channel *c, uint32_t type, uint32_t ebx)
{
    struct regs r = {BDOOR_MAGIC, ebx, CMD_MESSAGE | type << 16,
                     BDOOR_PORT | c->id << 16, c->cookie_high, c->cookie_low, 0};
    port_in(&r);
    return r;
}

static uint32_t status_of(const struct regs *r) { return r->ecx >> 16; }

static struct channel rpci_open(const char *step)
{
    struct channel none = {0, 0, 0};
    struct regs r = message(&none, MSG_OPEN, PROTO_RPCI | FLAG_COOKIE);
    if (!(status_of(&r) & ST_SUCCESS))
        fail(step, "open status", status_of(&r));
    struct channel c = {r.edx >> 16, r.esi, r.edi};
    return c;
}

static void rpci_close(const struct channel *c, const char *step)
{
    struct regs r = message(c, MSG_CLOSE, 0);
    if (!(status_of(&r) & ST_SUCCESS))
        fail(step, "close status", status_of(&r));
}

/* SENDSIZE then SENDPAYLOAD four bytes at a time. */
static void send_low_bandwidth(const struct channel *c, const char *msg, const char *step)
{
    uint32_t len = strlen(msg);
    struct regs r = message(c, MSG_SENDSIZE, len);
    if (!(status_of(&r) & ST_SUCCESS))
        fail(step, "sendsize status", status_of(&r));
    for (uint32_t at = 0; at < len; at += 4) {
        uint32_t word = 0;
        for (uint32_t i = 0; i < 4 && at + i < len; i++)
            word |= (uint32_t)(uint8_t)msg[at + i] << (8 * i);
        r = message(c, MSG_SENDPAYLOAD, word);
        if (!(status_of(&r) & ST_SUCCESS))
            fail(step, "sendpayload status", status_of(&r));
    }
}

/* RECVSIZE, RECVPAYLOAD four bytes at a time, RECVSTATUS. */
static void receive_low_bandwidth(const struct channel *c, char *buf, uint32_t cap,
                                  const char *step)
{
    struct regs r = message(c, MSG_RECVSIZE, 0);
    if ((status_of(&r) & (ST_SUCCESS | ST_DORECV)) != (ST_SUCCESS | ST_DORECV))
        fail(step, "recvsize status", status_of(&r));
    uint32_t len = r.ebx;
    if (len >= cap)
        fail(step, "reply too long", len);
    for (uint32_t at = 0; at < len; at += 4) {
        r = message(c, MSG_RECVPAYLOAD, ST_SUCCESS);
        if (!(status_of(&r) & ST_SUCCESS))
            fail(step, "recvpayload status", status_of(&r));
        for (uint32_t i = 0; i < 4 && at + i < len; i++)
            buf[at + i] = (char)(r.ebx >> (8 * i));
    }
    buf[len] = 0;
    r = message(c, MSG_RECVSTATUS, ST_SUCCESS);
    if (!(status_of(&r) & ST_SUCCESS))
        fail(step, "recvstatus status", status_of(&r));
}

static int same(const char *a, const char *b)
{
    return strlen(a) == strlen(b) && memcmp(a, b, strlen(a)) == 0;
}

static void rpc_expect(const struct channel *c, const char *step, const char *request,
                       const char *expected)
{
    static char reply[256];
    send_low_bandwidth(c, request, step);
    receive_low_bandwidth(c, reply, sizeof reply, step);
    if (!same(reply, expected)) {
        rt_printf("%s: FAILED reply=\"%s\" expected=\"%s\"\n", step, reply, expected);
        rt_printf("backdoor: FAILED\n");
        rt_exit(1);
    }
    rt_printf("%s: ok reply=\"%s\"\n", step, reply);
}

static void step_cpuid(void)
{
    uint32_t a, b, c, d;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000u), "c"(0));
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &c, 4);
    memcpy(vendor + 8, &d, 4);
    vendor[12] = 0;
    rt_printf("cpuid: ok max=0x%08x vendor=\"%s\"\n", a, vendor);
}

static void step_getversion(void)
{
    struct regs r = call(CMD_GETVERSION, ~BDOOR_MAGIC);
    if (r.ebx != BDOOR_MAGIC)
        fail("getversion", "ebx is not the magic", r.ebx);
    if (r.eax == 0xFFFFFFFFu)
        fail("getversion", "eax", r.eax);
    rt_printf("getversion: ok version=%u type=%u\n", r.eax, r.ecx);
}

/* the VM's identity as the .vmx gives it (virtualHW.version, uuid.bios) */
static void step_identity(void)
{
    struct regs r = call(CMD_GETHWVERSION, 0);
    rt_printf("hwversion: ok version=%u\n", r.eax);
    r = call(CMD_GETUUID, 0);
    rt_printf("uuid: ok %08x %08x %08x %08x\n", r.eax, r.ebx, r.ecx, r.edx);
}

/* The guest's clock: 50 ms measured with RDTSC at the frequency CPUID leaf
 * 0x40000010 reports must be 45-75 ms of the backdoor's wall clock (a wrong
 * advertised frequency makes a guest's clock run fast or slow).
 *
 * The host may preempt the guest between the two GETTIMEs; that only ever
 * adds backdoor time, never takes it away (the TSC keeps counting through a
 * preemption, so one inside the spin shortens what is left of it, and one
 * that outlasts it or falls next to a GETTIME lengthens the attempt).  So an
 * attempt over 75 ms is retried, up to CLOCK_ATTEMPTS in all, and one
 * attempt in range passes; an attempt under 45 ms (the clock runs fast)
 * fails at once, as no preemption can explain it.
 * Which attempt passed is printed on a '#' line (informational). */
#define CLOCK_ATTEMPTS 5u

static uint32_t clock_attempt(uint32_t khz)
{
    uint64_t t0, ticks = (uint64_t)khz * 50;
    struct regs g0, g1;
    g0 = call(CMD_GETTIME, 0);
    t0 = rt_rdtsc();
    while (rt_rdtsc() - t0 < ticks)
        ;
    g1 = call(CMD_GETTIME, 0);
    return (g1.eax - g0.eax) * 1000000u + g1.ebx - g0.ebx;
}

static void step_clock(void)
{
    uint32_t khz, b, c, d, elapsed_us = 0, attempt;
    __asm__ __volatile__("cpuid" : "=a"(khz), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000010u), "c"(0));
    if (khz == 0)
        fail("clock", "CPUID 0x40000010 reports no TSC frequency", khz);
    for (attempt = 1; attempt <= CLOCK_ATTEMPTS; attempt++) {
        elapsed_us = clock_attempt(khz);
        if (elapsed_us < 45000)
            fail("clock", "backdoor microseconds for 50 ms of TSC", elapsed_us);
        if (elapsed_us <= 75000)
            break;
        rt_printf("# clock: attempt %u of %u took %u us (preempted?), retrying\n", attempt,
                  CLOCK_ATTEMPTS, elapsed_us);
    }
    if (attempt > CLOCK_ATTEMPTS)
        fail("clock", "backdoor microseconds for 50 ms of TSC", elapsed_us);
    rt_printf("# clock: attempt %u of %u in range\n", attempt, CLOCK_ATTEMPTS);
    rt_printf("clock: ok 50 ms of TSC at %u kHz took %u us by the backdoor clock\n", khz, elapsed_us);
}

static void step_rpci(void)
{
    struct channel c = rpci_open("rpci-open");
    rt_printf("rpci-open: ok channel=%u\n", c.id);
    rpc_expect(&c, "info-set", "info-set guestinfo.nestmon.test hello", "1 ");
    rpc_expect(&c, "info-get", "info-get guestinfo.nestmon.test", "1 hello");
    rpc_expect(&c, "tools.set.version", "tools.set.version 12345", "1 ");
    rpc_expect(&c, "unknown", "nestmon.no.such.command", "0 Unknown command");
    rpci_close(&c, "rpci-close");
    rt_printf("rpci-close: ok\n");
}

static void step_nesting(void)
{
    struct regs r = call(CMD_NESTING_CONTROL | NESTING_QUERY << 16, 0);
    if (r.eax < 2 || r.eax == 0xFFFFFFFFu)
        fail("nesting", "query version", r.eax);
    rt_printf("nesting: ok version=%u\n", r.eax);
}

static void step_high_bandwidth(void)
{
    static const char request[] = "info-get guestinfo.nestmon.test";
    static char reply[64];
    struct channel c = rpci_open("hb");
    uint32_t len = sizeof request - 1;

    struct regs r = message(&c, MSG_SENDSIZE, len);
    if ((status_of(&r) & (ST_SUCCESS | ST_HB)) != (ST_SUCCESS | ST_HB))
        fail("hb", "sendsize status", status_of(&r));
    struct regs out = {BDOOR_MAGIC, HB_CMD_MESSAGE | ST_SUCCESS << 16, len,
                       BDOORHB_PORT | c.id << 16, (uint32_t)(uintptr_t)request,
                       c.cookie_low, c.cookie_high};
    port_rep_outsb(&out);
    if (!((out.ebx >> 16) & ST_SUCCESS))
        fail("hb", "rep outsb status", out.ebx);

    r = message(&c, MSG_RECVSIZE, 0);
    uint32_t want = ST_SUCCESS | ST_DORECV | ST_HB;
    if ((status_of(&r) & want) != want)
        fail("hb", "recvsize status", status_of(&r));
    uint32_t size = r.ebx;
    if (size >= sizeof reply)
        fail("hb", "reply too long", size);
    struct regs in = {BDOOR_MAGIC, HB_CMD_MESSAGE | ST_SUCCESS << 16, size,
                      BDOORHB_PORT | c.id << 16, c.cookie_high,
                      (uint32_t)(uintptr_t)reply, c.cookie_low};
    port_rep_insb(&in);
    if (!((in.ebx >> 16) & ST_SUCCESS))
        fail("hb", "rep insb status", in.ebx);
    reply[size] = 0;
    r = message(&c, MSG_RECVSTATUS, ST_SUCCESS);
    if (!(status_of(&r) & ST_SUCCESS))
        fail("hb", "recvstatus status", status_of(&r));
    rpci_close(&c, "hb");
    if (!same(reply, "1 hello")) {
        rt_printf("hb: FAILED reply=\"%s\"\n", reply);
        rt_printf("backdoor: FAILED\n");
        rt_exit(1);
    }
    rt_printf("hb: ok reply=\"%s\" bytes=%u\n", reply, size);
}

int main(void)
{
    step_cpuid();
    step_getversion();
    step_identity();
    step_clock();
    step_rpci();
    step_nesting();
    step_high_bandwidth();
    rt_printf("backdoor: all ok\n");
    rt_exit(0);
}
