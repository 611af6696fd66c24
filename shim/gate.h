/* The lock behind libptkhsm.so's call gate (ptkhsm_shim.c says why there is a gate).
 *
 * What makes short calls slow on more threads is the hand-over, not the
 * waiting: a pthread mutex costs the thread leaving a futex wake-up on nearly
 * every call (an inter-processor interrupt, dearer in a VM than a short call's
 * Python), and a lock that hands over at once moves the Python working set to
 * the other core's cache each time. So, like the GIL's switch interval:
 *
 * - The thread inside keeps the gate while it comes straight back (a burst of
 *   calls), for up to GATE_SLICE_NS; then its leaving hands the gate over
 *   (the word set to a value only a waiting thread takes) to the thread in
 *   line, or to the longest sleeper if nobody is in line, and it queues
 *   behind the sleepers itself: every thread gets a slice in turn.
 * - One waiting thread is "in line": it spins for GATE_SPIN_NS, then naps in
 *   steps of GATE_NAP_NS on its own futex word, and takes an open gate once
 *   it has stayed open for GATE_GRACE_NS (time for a thread in a burst to come
 *   back). Nobody has to wake it, so leaving costs no system call. After
 *   GATE_LINE_NS in line (a long call inside) it joins the sleepers.
 * - The others sleep on the gate word until a hand-over, or until a leaving
 *   thread finds nobody in line and wakes one to take the place (never a
 *   second one while the first is on its way: gate_waking, the "woken" bit of
 *   Go's sync.Mutex).
 *
 * Sleepers cannot be lost: a thread that may wait on the word is counted in
 * gate_sleepers before its exchange sets the word to TAKEN_SLEEPERS, the
 * leaving thread reads the count after it has opened the gate, and a wake-up
 * is skipped only while a thread is in line or one is already on its way. As
 * a second net, every sleep ends after GATE_SLEEP_NS by itself: a wake-up lost
 * to a race the argument missed costs a waiting thread that, not a hang.
 * Every atomic is sequentially consistent, which the argument needs. */
#ifndef PTKHSM_GATE_H
#define PTKHSM_GATE_H

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GATE_SLICE_NS 1000000L /* the longest one thread keeps the gate from waiting ones */
#define GATE_GRACE_NS 2000L    /* how long a leaving thread has to come back for its next call */
#define GATE_SPIN_NS 20000L    /* the thread in line spins this long: most calls are shorter */
#define GATE_NAP_NS 50000L     /* then naps this long at a time */
#define GATE_LINE_NS 5000000L  /* and gives up its place after this long */
#define GATE_SLEEP_NS 50000000L /* a sleeper's safety net (below): long, to keep the queue's order */

enum {
    GATE_OPEN,
    GATE_TAKEN,
    GATE_TAKEN_SLEEPERS,    /* taken, and threads may be asleep on the word */
    GATE_TO_LINE,           /* handed over to the thread in line (or any waiter) */
    GATE_TO_SLEEPER,        /* handed over to a sleeper */
};

static int gate_word;
static int gate_in_line;       /* 1 while a thread holds the place in line */
static int gate_line_word;     /* what the thread in line naps on; 1 while it naps */
static int gate_sleepers;
static int gate_waking;
static long gate_slice_ends;   /* 0: no contention seen yet; only the thread inside uses it */
static __thread int gate_yielded; /* this thread's slice was up when it last left */

static const struct timespec gate_nap = {0, GATE_NAP_NS};
static const struct timespec gate_sleep_most = {0, GATE_SLEEP_NS};

static inline void gate_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int gate_take(int from)
{
    return __atomic_compare_exchange_n(&gate_word, &from, GATE_TAKEN, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static long gate_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline long gate_futex(int *word, int op, int value, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

/* The thread in line: -> 1 with the gate taken, 0 when its time in line is up. */
static int gate_wait_in_line(void)
{
    long now = gate_now_ns(), spin_ends = now + GATE_SPIN_NS, line_ends = now + GATE_LINE_NS;
    long open_since = 0;
    for (unsigned i = 1;; i++) {
        int word = __atomic_load_n(&gate_word, __ATOMIC_SEQ_CST);
        if (word == GATE_TO_LINE && gate_take(GATE_TO_LINE))
            return 1;
        /* handed to a sleeper that has gone (into line, or elsewhere) meanwhile */
        if (word == GATE_TO_SLEEPER && !__atomic_load_n(&gate_sleepers, __ATOMIC_SEQ_CST)
                && gate_take(GATE_TO_SLEEPER))
            return 1;
        if (word != GATE_OPEN)
            open_since = 0;
        else if (!open_since)
            open_since = gate_now_ns();
        else if (gate_now_ns() - open_since >= GATE_GRACE_NS && gate_take(GATE_OPEN))
            return 1;
        if (i % 64)
            gate_relax();
        else if ((now = gate_now_ns()) > line_ends)
            return 0;
        else if (now > spin_ends && !open_since) {
            __atomic_store_n(&gate_line_word, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&gate_word, __ATOMIC_SEQ_CST) != GATE_TO_LINE)
                gate_futex(&gate_line_word, FUTEX_WAIT_PRIVATE, 1, &gate_nap);
            __atomic_store_n(&gate_line_word, 0, __ATOMIC_SEQ_CST);
        }
    }
}

static void gate_lock(void)
{
    if (gate_take(GATE_OPEN))
        return;
    /* a thread whose slice was just up queues behind the sleepers, not in line */
    int yielded = gate_yielded && __atomic_load_n(&gate_sleepers, __ATOMIC_SEQ_CST);
    gate_yielded = 0;
    for (;;) {
        int in_line = !yielded && !__atomic_exchange_n(&gate_in_line, 1, __ATOMIC_SEQ_CST);
        yielded = 0;
        if (in_line) {
            int taken = gate_wait_in_line();
            __atomic_store_n(&gate_in_line, 0, __ATOMIC_SEQ_CST);
            if (taken)
                return;
        }
        __atomic_fetch_add(&gate_sleepers, 1, __ATOMIC_SEQ_CST);
        int was = __atomic_exchange_n(&gate_word, GATE_TAKEN_SLEEPERS, __ATOMIC_SEQ_CST);
        int taken = was == GATE_OPEN || was == GATE_TO_LINE || was == GATE_TO_SLEEPER;
        if (!taken)
            gate_futex(&gate_word, FUTEX_WAIT_PRIVATE, GATE_TAKEN_SLEEPERS, &gate_sleep_most);
        __atomic_fetch_sub(&gate_sleepers, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&gate_waking, 0, __ATOMIC_SEQ_CST);
        if (taken || gate_take(GATE_OPEN) || gate_take(GATE_TO_SLEEPER) || gate_take(GATE_TO_LINE))
            return;
    }
}

static void gate_wake_sleeper(void)
{
    if (!__atomic_exchange_n(&gate_waking, 1, __ATOMIC_SEQ_CST)
            && gate_futex(&gate_word, FUTEX_WAKE_PRIVATE, 1, NULL) == 0)
        __atomic_store_n(&gate_waking, 0, __ATOMIC_SEQ_CST);   /* nobody was asleep yet */
}

static void gate_unlock(void)
{
    int to = GATE_OPEN;
    int sleepers = __atomic_load_n(&gate_sleepers, __ATOMIC_SEQ_CST);
    if (sleepers || __atomic_load_n(&gate_in_line, __ATOMIC_SEQ_CST)) {
        long now = gate_now_ns();
        if (!gate_slice_ends)
            gate_slice_ends = now + GATE_SLICE_NS;
        else if (now > gate_slice_ends) {
            to = __atomic_load_n(&gate_in_line, __ATOMIC_SEQ_CST) ? GATE_TO_LINE : GATE_TO_SLEEPER;
            gate_slice_ends = 0;
            gate_yielded = 1;
        }
    }
    __atomic_store_n(&gate_word, to, __ATOMIC_SEQ_CST);
    if (to == GATE_TO_SLEEPER) {
        __atomic_store_n(&gate_waking, 0, __ATOMIC_SEQ_CST);   /* this one must be woken */
        gate_wake_sleeper();
    } else if (to == GATE_TO_LINE) {
        if (__atomic_exchange_n(&gate_line_word, 0, __ATOMIC_SEQ_CST))
            gate_futex(&gate_line_word, FUTEX_WAKE_PRIVATE, 1, NULL);
    } else if (__atomic_load_n(&gate_sleepers, __ATOMIC_SEQ_CST)
               && !__atomic_load_n(&gate_in_line, __ATOMIC_SEQ_CST))
        gate_wake_sleeper();
}

/* Whether a thread waits to come in (in line or asleep). */
static inline int gate_waited_for(void)
{
    return __atomic_load_n(&gate_in_line, __ATOMIC_SEQ_CST) || __atomic_load_n(&gate_sleepers, __ATOMIC_SEQ_CST);
}

/* In a child after fork(): only the forking thread is left. */
static void gate_reset(void)
{
    gate_word = gate_in_line = gate_line_word = gate_sleepers = gate_waking = gate_yielded = 0;
    gate_slice_ends = 0;
}

#endif
