/*
 * threads.c - 8 threads share a pool of sessions and the same keys, and check every result.
 *
 *   gcc -Wall -I <directory of pkcs11.h> -o threads threads.c -ldl -lpthread
 *   ./threads <module.so> <token label> <user PIN> <RSA key label> <EC key label> [iterations]
 *
 * C_Initialize with CKF_OS_LOCKING_OK; one login; a pool of 4 sessions that
 * threads borrow one at a time (a session is not meant for two threads at
 * once). Each iteration of each thread:
 *   - C_Digest (SHA-256) of its message, compared with the digest computed
 *     before the threads started;
 *   - CKM_SHA256_RSA_PKCS signature, compared byte for byte with the reference
 *     signature (PKCS #1 v1.5 is deterministic), and C_Verify;
 *   - CKM_ECDSA signature of the digest, C_Verify, and C_Verify of a changed
 *     digest, which must give CKR_SIGNATURE_INVALID.
 * Prints "ok: ..." and exits 0 when every check held.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11_unix.h"  /* shim/include: pkcs11.h with its platform macros */
#include "find_slot.h"

#define THREADS 8
#define POOL 4

static CK_FUNCTION_LIST_PTR p11;
static CK_OBJECT_HANDLE rsa_private, rsa_public, ec_private, ec_public;
static int iterations = 20;

/* The session pool: threads take a free session and give it back. */
static CK_SESSION_HANDLE pool[POOL];
static int pool_busy[POOL];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_free = PTHREAD_COND_INITIALIZER;

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures;
static long operations;

struct reference {
    CK_BYTE message[64];
    CK_BYTE digest[32];
    CK_BYTE rsa_signature[512];
    CK_ULONG rsa_signature_len;
};
static struct reference references[THREADS];

static int take_session(void)
{
    int i;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        for (i = 0; i < POOL; i++) {
            if (!pool_busy[i]) {
                pool_busy[i] = 1;
                pthread_mutex_unlock(&pool_lock);
                return i;
            }
        }
        pthread_cond_wait(&pool_free, &pool_lock);
    }
}

static void give_session(int i)
{
    pthread_mutex_lock(&pool_lock);
    pool_busy[i] = 0;
    pthread_cond_signal(&pool_free);
    pthread_mutex_unlock(&pool_lock);
}

static int fail(int thread, const char *what, CK_RV rv)
{
    pthread_mutex_lock(&report_lock);
    printf("FAIL thread %d: %s: CKR 0x%lx\n", thread, what, (unsigned long)rv);
    failures++;
    pthread_mutex_unlock(&report_lock);
    return 0;
}

#define CHECK(what, call) do { CK_RV rv_ = (call); if (rv_ != CKR_OK) return fail(thread, what, rv_); } while (0)

static int digest(CK_SESSION_HANDLE s, CK_BYTE *data, CK_ULONG len, CK_BYTE *out, int thread)
{
    CK_MECHANISM sha256 = {CKM_SHA256, NULL_PTR, 0};
    CK_ULONG out_len = 32;
    CHECK("C_DigestInit", p11->C_DigestInit(s, &sha256));
    CHECK("C_Digest", p11->C_Digest(s, data, len, out, &out_len));
    return out_len == 32 ? 1 : fail(thread, "C_Digest length", out_len);
}

static int rsa_sign(CK_SESSION_HANDLE s, CK_BYTE *data, CK_ULONG len, CK_BYTE *sig, CK_ULONG *sig_len,
                    int thread)
{
    CK_MECHANISM mechanism = {CKM_SHA256_RSA_PKCS, NULL_PTR, 0};
    CHECK("C_SignInit RSA", p11->C_SignInit(s, &mechanism, rsa_private));
    CHECK("C_Sign RSA", p11->C_Sign(s, data, len, sig, sig_len));
    return 1;
}

/* One iteration of the work of `thread` on session `s`. */
static int work(CK_SESSION_HANDLE s, int thread)
{
    struct reference *ref = &references[thread];
    CK_MECHANISM sha256_rsa = {CKM_SHA256_RSA_PKCS, NULL_PTR, 0};
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL_PTR, 0};
    CK_BYTE hash[32], sig[512];
    CK_ULONG sig_len = sizeof sig;
    CK_RV rv;

    if (!digest(s, ref->message, sizeof ref->message, hash, thread))
        return 0;
    if (memcmp(hash, ref->digest, 32) != 0)
        return fail(thread, "digest differs from the reference", 0);

    if (!rsa_sign(s, ref->message, sizeof ref->message, sig, &sig_len, thread))
        return 0;
    if (sig_len != ref->rsa_signature_len || memcmp(sig, ref->rsa_signature, sig_len) != 0)
        return fail(thread, "RSA signature differs from the reference", 0);
    CHECK("C_VerifyInit RSA", p11->C_VerifyInit(s, &sha256_rsa, rsa_public));
    CHECK("C_Verify RSA", p11->C_Verify(s, ref->message, sizeof ref->message, sig, sig_len));

    sig_len = sizeof sig;
    CHECK("C_SignInit ECDSA", p11->C_SignInit(s, &ecdsa, ec_private));
    CHECK("C_Sign ECDSA", p11->C_Sign(s, hash, 32, sig, &sig_len));
    CHECK("C_VerifyInit ECDSA", p11->C_VerifyInit(s, &ecdsa, ec_public));
    CHECK("C_Verify ECDSA", p11->C_Verify(s, hash, 32, sig, sig_len));
    hash[0] ^= 0x80;
    CHECK("C_VerifyInit ECDSA (changed)", p11->C_VerifyInit(s, &ecdsa, ec_public));
    rv = p11->C_Verify(s, hash, 32, sig, sig_len);
    if (rv != CKR_SIGNATURE_INVALID)
        return fail(thread, "C_Verify of a changed digest is not CKR_SIGNATURE_INVALID", rv);
    return 1;
}

static void *run(void *arg)
{
    int thread = (int)(long)arg, i, done = 0;
    for (i = 0; i < iterations; i++) {
        int slot = take_session();
        int ok = work(pool[slot], thread);
        give_session(slot);
        if (!ok)
            break;
        done++;
    }
    pthread_mutex_lock(&report_lock);
    operations += 6L * done;
    pthread_mutex_unlock(&report_lock);
    return NULL;
}

static CK_OBJECT_HANDLE find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS class, const char *label)
{
    CK_ATTRIBUTE template[] = {{CKA_CLASS, &class, sizeof class}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
    CK_ULONG count = 0;
    if (p11->C_FindObjectsInit(s, template, 2) == CKR_OK) {
        if (p11->C_FindObjects(s, &object, 1, &count) != CKR_OK || count != 1)
            object = CK_INVALID_HANDLE;
        p11->C_FindObjectsFinal(s);
    }
    if (object == CK_INVALID_HANDLE)
        printf("FAIL no object of class %lu labelled %s\n", (unsigned long)class, label);
    return object;
}

int main(int argc, char **argv)
{
    CK_C_GetFunctionList get_function_list;
    CK_C_INITIALIZE_ARGS init_args;
    CK_SLOT_ID slot = 0;
    pthread_t threads[THREADS];
    void *module;
    CK_RV rv;
    int t, thread = -1;

    if (argc < 6) {
        fprintf(stderr, "usage: %s <module.so> <token label> <PIN> <RSA key label> <EC key label> [iterations]\n",
                argv[0]);
        return 2;
    }
    if (argc > 6)
        iterations = atoi(argv[6]);
    module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!module || !(get_function_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList")) ||
        get_function_list(&p11) != CKR_OK) {
        printf("FAIL cannot load %s\n", argv[1]);
        return 1;
    }
    memset(&init_args, 0, sizeof init_args);
    init_args.flags = CKF_OS_LOCKING_OK;
    if ((rv = p11->C_Initialize(&init_args)) != CKR_OK) {
        printf("FAIL C_Initialize: CKR 0x%lx\n", (unsigned long)rv);
        return 1;
    }

    if (!find_slot(p11, argv[2], &slot)) {
        printf("FAIL no token labelled %s\n", argv[2]);
        return 1;
    }
    for (t = 0; t < POOL; t++) {
        if ((rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL_PTR, NULL_PTR, &pool[t])) != CKR_OK) {
            printf("FAIL C_OpenSession: CKR 0x%lx\n", (unsigned long)rv);
            return 1;
        }
    }
    /* The login state belongs to the application: one login serves every session. */
    if ((rv = p11->C_Login(pool[0], CKU_USER, (CK_UTF8CHAR_PTR)argv[3], strlen(argv[3]))) != CKR_OK) {
        printf("FAIL C_Login: CKR 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    rsa_private = find(pool[1], CKO_PRIVATE_KEY, argv[4]);
    rsa_public = find(pool[1], CKO_PUBLIC_KEY, argv[4]);
    ec_private = find(pool[2], CKO_PRIVATE_KEY, argv[5]);
    ec_public = find(pool[2], CKO_PUBLIC_KEY, argv[5]);
    if (!rsa_private || !rsa_public || !ec_private || !ec_public)
        return 1;

    /* References, computed before any thread runs. */
    for (t = 0; t < THREADS; t++) {
        struct reference *ref = &references[t];
        memset(ref->message, 'a' + t, sizeof ref->message);
        ref->rsa_signature_len = sizeof ref->rsa_signature;
        if (!digest(pool[t % POOL], ref->message, sizeof ref->message, ref->digest, thread) ||
            !rsa_sign(pool[t % POOL], ref->message, sizeof ref->message, ref->rsa_signature,
                      &ref->rsa_signature_len, thread))
            return 1;
    }

    for (t = 0; t < THREADS; t++)
        pthread_create(&threads[t], NULL, run, (void *)(long)t);
    for (t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);

    p11->C_Logout(pool[0]);
    for (t = 0; t < POOL; t++)
        p11->C_CloseSession(pool[t]);
    if ((rv = p11->C_Finalize(NULL_PTR)) != CKR_OK) {
        printf("FAIL C_Finalize: CKR 0x%lx\n", (unsigned long)rv);
        failures++;
    }
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok: %d threads, %d sessions, %ld operations checked\n", THREADS, POOL, operations);
    return 0;
}
