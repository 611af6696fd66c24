/* Whether a brief computation outside the GIL lets the next thread through the gate.
 *
 * An ECDSA signature spends ~20 µs in OpenSSL with the GIL released, about as long
 * as its call's Python. With the gate open meanwhile, a second thread's Python runs
 * beside it. But on 8 threads a thread let in makes one runnable thread more than
 * there are cores (the next one waits in line, spinning: shim/gate.h), and the GIL's
 * holder queues behind the computations: 0.82-0.90x of the shut gate.
 *
 * So the gate opens for a brief computation only while no more threads are in calls
 * of the module than there are cores, and at most that many compute outside. Measured
 * in rounds taking turns (P-256, 1 s runs, medians of 6): on 2 threads 1.39x the
 * rule before this one (which opened only when nobody waited to come in, and so
 * hardly ever on 2 threads), 1.19x one thread; on 8 threads the gate stays shut and
 * the thread inside keeps its time slice, as fast as before (1.03x). Long
 * computations (RSA, a PIN's KDF) and waits (disk, network) do not come here:
 * ptkhsm_let_others_in opens the gate for them in any case, and so does EdDSA, whose
 * computation is most of its call (ptkhsm/hsm/session.py). */
#ifndef PTKHSM_SHARE_H
#define PTKHSM_SHARE_H

#include <sched.h>

static int share_cores = 1;        /* CPUs this process may run on */
static int share_outside;          /* threads computing outside the gate now */
static int share_callers;          /* threads in a call of the module now, wherever they are */
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
    if (share_cores < 2 || __atomic_load_n(&share_callers, __ATOMIC_SEQ_CST) > share_cores)
        return 0;
    if (__atomic_add_fetch(&share_outside, 1, __ATOMIC_SEQ_CST) > share_cores) {
        __atomic_sub_fetch(&share_outside, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    share_counted = 1;
    return 1;
}

/* Any thread, as its outermost call starts (before the gate) and ends. */
static inline void share_call_starts(void)
{
    __atomic_add_fetch(&share_callers, 1, __ATOMIC_SEQ_CST);
}

static inline void share_call_ends(void)
{
    __atomic_sub_fetch(&share_callers, 1, __ATOMIC_SEQ_CST);
    if (share_counted) {
        share_counted = 0;
        __atomic_sub_fetch(&share_outside, 1, __ATOMIC_SEQ_CST);
    }
}

static void share_reset(void)
{
    share_outside = share_counted = share_callers = 0;
}

#endif
