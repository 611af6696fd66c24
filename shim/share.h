/* Whether a brief computation outside the GIL lets the next thread through the gate.
 *
 * An ECDSA signature spends ~20 µs in OpenSSL with the GIL released, about as long
 * as its call's Python. With the gate open meanwhile, a second thread's Python runs
 * beside it: P-256 on 2 threads signed at 1.25x the rate with the gate kept shut in
 * quiet minutes, 1.03x in busy ones (8-10 rounds taking turns with it). But a thread
 * let in while others wait at the gate makes one runnable thread more than there are
 * cores: on 8 threads that queued the GIL's holder behind the computations (0.82x of
 * the shut gate).
 *
 * So the gate opens for a brief computation only when nobody waits to come in (the
 * thread inside leaves it open, for the computing one's next call) and while fewer
 * threads than cores compute outside. On 8 threads the gate then stays shut and the
 * thread inside keeps its time slice (shim/gate.h), as fast as before. Long
 * computations (RSA, a PIN's KDF) and waits (disk, network) do not come here:
 * ptkhsm_let_others_in opens the gate for them in any case. */
#ifndef PTKHSM_SHARE_H
#define PTKHSM_SHARE_H

#include <sched.h>

static int share_cores = 1;        /* CPUs this process may run on */
static int share_outside;          /* threads computing outside the gate now */
static __thread int share_counted; /* this thread is one of them until its call ends */

static void share_count_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1)
        share_cores = CPU_COUNT(&set);
}

/* The thread inside, before a brief computation: -> 1 if it should open the gate. */
static inline int share_take_core(void)
{
    if (share_cores < 2 || gate_waited_for())
        return 0;
    if (__atomic_add_fetch(&share_outside, 1, __ATOMIC_SEQ_CST) > share_cores) {
        __atomic_sub_fetch(&share_outside, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    share_counted = 1;
    return 1;
}

/* Any thread, as its call ends. */
static inline void share_give_core(void)
{
    if (share_counted) {
        share_counted = 0;
        __atomic_sub_fetch(&share_outside, 1, __ATOMIC_SEQ_CST);
    }
}

static void share_reset(void)
{
    share_outside = share_counted = 0;
}

#endif
