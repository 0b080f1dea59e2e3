/* pm_adaptive_call: pm_adaptive.c with the store alone in a function the
 * loop calls (nestmon: guest-only).
 * Under nestmon the store's unit is entered by a predicted call and left
 * by a predicted return: no poll and no indirect-branch lookup in it, so
 * the exit requests of timer interrupts never find it about to run. Only
 * time samples of the vCPU thread find it in hot code, after which it goes
 * back to the window: tests/shadow_mmu.rs checks both in --stats.  What
 * the guest prints is the same everywhere: what it stored, read back. */
#define PM_ADAPTIVE_NAME "pm_adaptive_call"
#define PM_ADAPTIVE_WHAT "a called store"
#define PM_ADAPTIVE_STORE_IN_CALL 1
#include "pm_adaptive.c"
