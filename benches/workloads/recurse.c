/* recurse: deep recursion through function pointers — an expression tree
 * evaluated by each node's own eval pointer (an indirect call per node,
 * returns unwinding 18 levels), and a mutual recursion 3,000 calls deep
 * through a table of pointers (deeper than any host return-stack
 * buffer). */
#include "rt.h"
#define NODES (1u << 18)
#define TREE_ROUNDS 200
#define DEEP 3000
#define DEEP_ROUNDS 16000
struct node;
typedef uint32_t (*eval_fn)(const struct node *n);
struct node {
    eval_fn eval;
    const struct node *l, *r;
    uint32_t v;
};
static struct node tree[NODES];
static uint32_t ev_leaf(const struct node *n) { return n->v; }
static uint32_t ev_add(const struct node *n) { return n->l->eval(n->l) + n->r->eval(n->r); }
static uint32_t ev_xor(const struct node *n) { return n->l->eval(n->l) ^ (n->r->eval(n->r) >> 1); }
static uint32_t ev_mul(const struct node *n) { return (n->l->eval(n->l) | 1) * n->r->eval(n->r); }
static uint32_t ev_rot(const struct node *n)
{
    uint32_t a = n->l->eval(n->l);
    return ((a << 7) | (a >> 25)) - n->r->eval(n->r);
}
static const eval_fn inner[4] = {ev_add, ev_xor, ev_mul, ev_rot};
/* Heap layout: node i has children 2i+1 and 2i+2; the last half are
 * leaves. */
static void build(uint32_t seed)
{
    uint32_t i;
    for (i = 0; i < NODES - 1; i++) {
        struct node *n = &tree[i];
        seed = seed * 1664525u + 1013904223u;
        if (2 * i + 2 < NODES - 1) {
            n->eval = inner[seed >> 30];
            n->l = &tree[2 * i + 1];
            n->r = &tree[2 * i + 2];
        } else {
            n->eval = ev_leaf;
            n->v = seed;
        }
    }
}
typedef uint32_t (*step_fn)(uint32_t depth, uint32_t x);
static uint32_t down_a(uint32_t depth, uint32_t x);
static uint32_t down_b(uint32_t depth, uint32_t x);
static uint32_t down_c(uint32_t depth, uint32_t x);
static step_fn volatile const steps[3] = {down_a, down_b, down_c};
static uint32_t down_a(uint32_t d, uint32_t x) { return d ? steps[x % 3](d - 1, x * 5 + 1) + 1 : x; }
static uint32_t down_b(uint32_t d, uint32_t x) { return d ? steps[x % 3](d - 1, x ^ (x >> 3)) ^ d : x; }
static uint32_t down_c(uint32_t d, uint32_t x) { return d ? steps[x % 3](d - 1, x + d) * 3 : x; }
int main(void)
{
    uint32_t r, sum = 0, deep = 0;
    for (r = 0; r < TREE_ROUNDS; r++) {
        build(r * 2654435761u + 1);
        sum = sum * 33 + tree[0].eval(&tree[0]);
    }
    for (r = 0; r < DEEP_ROUNDS; r++)
        deep = deep * 7 + steps[r % 3](DEEP, r);
    rt_printf("recurse: tree %08x, deep %08x\n", sum, deep);
    return 0;
}
