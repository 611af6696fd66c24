/* A plain C host for libptkhsm.so: the traps of the embedded interpreter.
 *
 *   host MODULE basic       dlopen RTLD_LOCAL, init, slot list, digest (imports cryptography)
 *   host MODULE interface   C_GetInterfaceList / C_GetInterface (NULL name, 2.40, 3.0)
 *   host MODULE fork        init, fork; the child sees NOT_INITIALIZED, then initialises again
 *   host MODULE threads     16 threads race C_Initialize(NULL), then digest in parallel
 *   host MODULE gate        8 threads call for 3 s: every thread gets its turns (the call gate,
 *                           shim/gate.h); prints each thread's calls and longest wait
 *   host MODULE sign        8 threads sign with one P-256 key and verify, for 2 s, then with
 *                           one Ed25519 key: computations outside the GIL, with the gate
 *                           open (shim/share.h) or shut, stay right
 *   host MODULE calls       init and one call; prints the return codes (for failure tests)
 *
 * Prints "ok" and exits 0 when every expectation holds; otherwise names the failure.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "pkcs11_unix.h"

static CK_FUNCTION_LIST_PTR p11;
static int failures;

#define EXPECT(call, want) do { \
    CK_RV rv_ = (call); \
    if (rv_ != (CK_RV)(want)) { \
        printf("FAIL %s:%d %s = 0x%lx, expected 0x%lx\n", __FILE__, __LINE__, #call, \
               (unsigned long)rv_, (unsigned long)(want)); \
        if (++failures > 20) exit(1); \
    } \
} while (0)

static void *load(const char *path)
{
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get;
    if (!handle) {
        printf("FAIL dlopen: %s\n", dlerror());
        exit(2);
    }
    get = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
    if (!get || get(&p11) != CKR_OK) {
        printf("FAIL C_GetFunctionList\n");
        exit(2);
    }
    return handle;
}

/* Slot 0's token must be initialised to open sessions; the test does it. */
static void init_token(void)
{
    CK_UTF8CHAR label[32];
    memset(label, ' ', sizeof label);
    memcpy(label, "host", 4);
    EXPECT(p11->C_InitToken(0, (CK_UTF8CHAR_PTR)"12345678", 8, label), CKR_OK);
}

static CK_SESSION_HANDLE open_slot0(void)
{
    CK_SESSION_HANDLE session = 0;
    EXPECT(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &session), CKR_OK);
    return session;
}

static void digest_once(CK_SESSION_HANDLE session)
{
    static const unsigned char abc[] = "abc";
    static const unsigned char want[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    CK_MECHANISM mech = {CKM_SHA256, NULL, 0};
    unsigned char out[32];
    CK_ULONG len = sizeof out;
    EXPECT(p11->C_DigestInit(session, &mech), CKR_OK);
    EXPECT(p11->C_Digest(session, (CK_BYTE_PTR)abc, 3, out, &len), CKR_OK);
    if (len != 32 || memcmp(out, want, 32)) {
        printf("FAIL SHA-256(abc) wrong\n");
        failures++;
    }
}

static void basic(void)
{
    CK_INFO info;
    CK_ULONG count = 0;
    EXPECT(p11->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    EXPECT(p11->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    EXPECT(p11->C_GetInfo(&info), CKR_OK);
    EXPECT(p11->C_GetSlotList(CK_FALSE, NULL, &count), CKR_OK);
    if (count != 3) {
        printf("FAIL %lu slots, expected 3\n", (unsigned long)count);
        failures++;
    }
    init_token();
    digest_once(open_slot0());
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
    EXPECT(p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    digest_once(open_slot0());
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
}

static void interface(void *handle)
{
    CK_C_GetInterfaceList list = (CK_C_GetInterfaceList)dlsym(handle, "C_GetInterfaceList");
    CK_C_GetInterface get = (CK_C_GetInterface)dlsym(handle, "C_GetInterface");
    CK_INTERFACE interfaces[4], *found = NULL;
    CK_ULONG count = 0;
    CK_VERSION v240 = {2, 40}, v30 = {3, 0}, v99 = {9, 9};
    CK_FUNCTION_LIST_3_0 *f30;
    if (!list || !get) {
        printf("FAIL C_GetInterfaceList/C_GetInterface not exported\n");
        exit(1);
    }
    EXPECT(list(NULL, &count), CKR_OK);
    if (count != 2) { printf("FAIL %lu interfaces\n", (unsigned long)count); failures++; }
    count = 1;
    EXPECT(list(interfaces, &count), CKR_BUFFER_TOO_SMALL);
    count = 4;
    EXPECT(list(interfaces, &count), CKR_OK);
    EXPECT(list(interfaces, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(get(NULL, NULL, &found, 0), CKR_OK);
    if (!found || strcmp((char *)found->pInterfaceName, "PKCS 11")
        || ((CK_VERSION *)found->pFunctionList)->major != 3) {
        printf("FAIL default interface is not PKCS 11 3.0\n");
        failures++;
    }
    EXPECT(get((CK_UTF8CHAR_PTR)"PKCS 11", &v240, &found, 0), CKR_OK);
    if (found && ((CK_VERSION *)found->pFunctionList)->minor != 40) { printf("FAIL 2.40\n"); failures++; }
    EXPECT(get((CK_UTF8CHAR_PTR)"PKCS 11", &v30, &found, 0), CKR_OK);
    f30 = (CK_FUNCTION_LIST_3_0 *)found->pFunctionList;
    EXPECT(get((CK_UTF8CHAR_PTR)"Vendor", NULL, &found, 0), CKR_ARGUMENTS_BAD);
    EXPECT(get(NULL, &v99, &found, 0), CKR_ARGUMENTS_BAD);
    EXPECT(get(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
    EXPECT(f30->C_Initialize(NULL), CKR_OK);
    init_token();
    EXPECT(f30->C_SessionCancel(CK_INVALID_HANDLE, 0), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f30->C_MessageEncryptInit(open_slot0(), NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT(f30->C_Finalize(NULL), CKR_OK);
}

static void do_fork(void)
{
    CK_ULONG count = 0;
    pid_t child;
    int status;
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    init_token();
    digest_once(open_slot0());
    fflush(stdout);
    child = fork();
    if (child == 0) {
        EXPECT(p11->C_GetSlotList(CK_FALSE, NULL, &count), CKR_CRYPTOKI_NOT_INITIALIZED);
        EXPECT(p11->C_Initialize(NULL), CKR_OK);
        digest_once(open_slot0());
        EXPECT(p11->C_Finalize(NULL), CKR_OK);
        fflush(stdout);
        _exit(failures ? 1 : 0);
    }
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("FAIL child status %d\n", status);
        failures++;
    }
    digest_once(open_slot0());  /* the parent is unaffected */
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
}

#define THREADS 16
static int init_ok, init_already;
static pthread_mutex_t counter = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
    CK_RV rv = p11->C_Initialize(NULL);
    int i;
    (void)arg;
    pthread_mutex_lock(&counter);
    if (rv == CKR_OK) init_ok++;
    else if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) init_already++;
    pthread_mutex_unlock(&counter);
    {
        CK_SESSION_HANDLE session = open_slot0();
        for (i = 0; i < 50; i++)
            digest_once(session);
        EXPECT(p11->C_CloseSession(session), CKR_OK);
    }
    return NULL;
}

static void threads(void)
{
    pthread_t t[THREADS];
    int i;
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    init_token();
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
    for (i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    if (init_ok != 1 || init_already != THREADS - 1) {
        printf("FAIL C_Initialize: %d OK, %d ALREADY_INITIALIZED\n", init_ok, init_already);
        failures++;
    }
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
}

/* The gate hands over by time slices (shim/gate.h): however many threads call, every
 * one gets its turns (its longest wait below 2 s even on a loaded machine), the one
 * making other calls (digests) as well as the others. */
#define GATE_THREADS 8
#define GATE_SECONDS 3.0
#define GATE_WORST_S 2.0
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

struct gate_worker { int index; long calls; double worst; };

static void *gate_worker(void *arg)
{
    struct gate_worker *w = arg;
    CK_SESSION_HANDLE session = open_slot0();
    CK_BYTE buffer[32];
    double start = now_s(), before, after;
    while ((before = now_s()) - start < GATE_SECONDS) {
        if (w->index == 0)
            digest_once(session);
        else
            EXPECT(p11->C_GenerateRandom(session, buffer, sizeof buffer), CKR_OK);
        after = now_s();
        if (after - before > w->worst)
            w->worst = after - before;
        w->calls++;
    }
    EXPECT(p11->C_CloseSession(session), CKR_OK);
    return NULL;
}

static void gate(void)
{
    pthread_t t[GATE_THREADS];
    struct gate_worker w[GATE_THREADS];
    int i;
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    init_token();
    for (i = 0; i < GATE_THREADS; i++) {
        w[i] = (struct gate_worker){i, 0, 0};
        pthread_create(&t[i], NULL, gate_worker, &w[i]);
    }
    for (i = 0; i < GATE_THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < GATE_THREADS; i++) {
        printf("thread %d: %ld calls, longest %.1f ms\n", i, w[i].calls, w[i].worst * 1e3);
        if (w[i].calls < 100 || w[i].worst > GATE_WORST_S) {
            printf("FAIL thread %d starved\n", i);
            failures++;
        }
    }
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
}

/* ECDSA lets the next thread in while it computes, when that pays (shim/share.h); EdDSA
 * keeps the gate shut: every signature must verify and every thread get its turns. */
#define SIGN_THREADS 8
#define SIGN_SECONDS 2.0
static CK_OBJECT_HANDLE sign_private, sign_public;
static CK_MECHANISM sign_mechanism;

struct sign_worker { long signed_; int bad; };

static void *sign_worker(void *arg)
{
    struct sign_worker *w = arg;
    CK_SESSION_HANDLE session = open_slot0();
    CK_BYTE digest[32], signature[64];
    CK_ULONG length;
    double start = now_s();
    memset(digest, 0x5a, sizeof digest);
    while (now_s() - start < SIGN_SECONDS) {
        digest[0] = (CK_BYTE)w->signed_;
        length = sizeof signature;
        EXPECT(p11->C_SignInit(session, &sign_mechanism, sign_private), CKR_OK);
        EXPECT(p11->C_Sign(session, digest, sizeof digest, signature, &length), CKR_OK);
        EXPECT(p11->C_VerifyInit(session, &sign_mechanism, sign_public), CKR_OK);
        if (p11->C_Verify(session, digest, sizeof digest, signature, length) != CKR_OK)
            w->bad++;
        w->signed_++;
    }
    EXPECT(p11->C_CloseSession(session), CKR_OK);
    return NULL;
}

static void sign_on_threads(CK_SESSION_HANDLE keeper, CK_MECHANISM_TYPE generator, CK_MECHANISM_TYPE signer,
                            const CK_BYTE *curve, CK_ULONG curve_length)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE public[] = {{CKA_EC_PARAMS, (void *)curve, curve_length}, {CKA_VERIFY, &yes, sizeof yes}};
    CK_ATTRIBUTE private[] = {{CKA_SIGN, &yes, sizeof yes}, {CKA_PRIVATE, &no, sizeof no}};  /* no login */
    CK_MECHANISM generate = {generator, NULL, 0};
    pthread_t t[SIGN_THREADS];
    struct sign_worker w[SIGN_THREADS];
    int i;
    sign_mechanism = (CK_MECHANISM){signer, NULL, 0};
    EXPECT(p11->C_GenerateKeyPair(keeper, &generate, public, 2, private, 2, &sign_public, &sign_private),
           CKR_OK);
    for (i = 0; i < SIGN_THREADS; i++) {
        w[i] = (struct sign_worker){0, 0};
        pthread_create(&t[i], NULL, sign_worker, &w[i]);
    }
    for (i = 0; i < SIGN_THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < SIGN_THREADS; i++) {
        printf("mechanism 0x%lx, thread %d: %ld signatures, %d not verified\n", (unsigned long)signer, i,
               w[i].signed_, w[i].bad);
        if (w[i].signed_ < 20 || w[i].bad) {
            printf("FAIL thread %d\n", i);
            failures++;
        }
    }
}

static void sign(void)
{
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static const CK_BYTE ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    CK_SESSION_HANDLE keeper;
    EXPECT(p11->C_Initialize(NULL), CKR_OK);
    init_token();
    keeper = open_slot0();   /* the session objects live as long as it does */
    sign_on_threads(keeper, CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, p256, sizeof p256);
    sign_on_threads(keeper, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, ed25519, sizeof ed25519);
    EXPECT(p11->C_Finalize(NULL), CKR_OK);
}

static void calls(void)
{
    CK_ULONG count = 0;
    printf("C_Initialize=0x%lx\n", (unsigned long)p11->C_Initialize(NULL));
    printf("C_GetSlotList=0x%lx\n", (unsigned long)p11->C_GetSlotList(CK_FALSE, NULL, &count));
    printf("C_Finalize=0x%lx\n", (unsigned long)p11->C_Finalize(NULL));
    exit(0);
}

int main(int argc, char **argv)
{
    void *handle;
    if (argc != 3) {
        fprintf(stderr, "usage: host MODULE basic|interface|fork|threads|gate|sign|calls\n");
        return 2;
    }
    handle = load(argv[1]);
    if (!strcmp(argv[2], "basic")) basic();
    else if (!strcmp(argv[2], "interface")) interface(handle);
    else if (!strcmp(argv[2], "fork")) do_fork();
    else if (!strcmp(argv[2], "threads")) threads();
    else if (!strcmp(argv[2], "gate")) gate();
    else if (!strcmp(argv[2], "sign")) sign();
    else if (!strcmp(argv[2], "calls")) calls();
    else return 2;
    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
