/* vcalls: virtual-call-heavy C — objects of four classes behind vtables;
 * one loop calls methods on a mixed array (each call site sees four
 * targets) and one on objects of a single class (each site sees one). */
#include "rt.h"
#define OBJS 1024
#define MIXED_ROUNDS 40000
#define SAME_ROUNDS 40000
struct obj;
struct vtable {
    uint32_t (*area)(const struct obj *o);
    void (*grow)(struct obj *o, uint32_t by);
    uint32_t (*tag)(const struct obj *o);
};
struct obj {
    const struct vtable *vt;
    uint32_t w, h;
};
static uint32_t sq_area(const struct obj *o) { return o->w * o->w; }
static void sq_grow(struct obj *o, uint32_t by) { o->w = (o->w + by) & 0xffff; }
static uint32_t sq_tag(const struct obj *o) { return 1; }
static uint32_t rect_area(const struct obj *o) { return o->w * o->h; }
static void rect_grow(struct obj *o, uint32_t by) { o->w = (o->w + by) & 0xffff; o->h = (o->h + 1) & 0xffff; }
static uint32_t rect_tag(const struct obj *o) { return 2; }
static uint32_t tri_area(const struct obj *o) { return o->w * o->h / 2; }
static void tri_grow(struct obj *o, uint32_t by) { o->h = (o->h + by) & 0xffff; }
static uint32_t tri_tag(const struct obj *o) { return 3; }
static uint32_t circ_area(const struct obj *o) { return o->w * o->w * 355 / 113; }
static void circ_grow(struct obj *o, uint32_t by) { o->w = (o->w + (by >> 1)) & 0xffff; }
static uint32_t circ_tag(const struct obj *o) { return 4; }
static const struct vtable classes[4] = {
    {sq_area, sq_grow, sq_tag},
    {rect_area, rect_grow, rect_tag},
    {tri_area, tri_grow, tri_tag},
    {circ_area, circ_grow, circ_tag},
};
static struct obj mixed[OBJS], same[OBJS];
static __attribute__((noinline)) uint32_t visit(struct obj *v, uint32_t n, uint32_t by)
{
    uint32_t i, sum = 0;
    for (i = 0; i < n; i++) {
        struct obj *o = &v[i];
        sum += o->vt->area(o) ^ o->vt->tag(o);
        o->vt->grow(o, by + i);
    }
    return sum;
}
int main(void)
{
    uint32_t i, x = 2463534242u, m = 0, s = 0;
    for (i = 0; i < OBJS; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        mixed[i].vt = &classes[x & 3];
        mixed[i].w = x >> 20;
        mixed[i].h = (x >> 8) & 0xfff;
        same[i].vt = &classes[1];
        same[i].w = x >> 22;
        same[i].h = x & 0xff;
    }
    for (i = 0; i < MIXED_ROUNDS; i++)
        m = m * 31 + visit(mixed, OBJS, i);
    for (i = 0; i < SAME_ROUNDS; i++)
        s = s * 31 + visit(same, OBJS, i);
    rt_printf("vcalls: mixed %08x, same %08x\n", m, s);
    return 0;
}
