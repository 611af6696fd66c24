/* ctperf-driver: speed of one PKCS#11 operation through the C ABI of any module.
 *
 *   ctperf-driver --module LIB --op NAME [--threads N] [--seconds T]
 *                 [--token LABEL | --slot ID] [--pin PIN] [--warmup N]
 *   ctperf-driver --module LIB --op init-token --label LABEL --so-pin SO --pin PIN [--slot ID]
 *   ctperf-driver --module LIB --op init
 *
 * It dlopens the module, C_GetFunctionList, C_Initialize (CKF_OS_LOCKING_OK),
 * opens a main session, logs the user in and creates the keys the operation
 * needs (session objects; token objects only where the operation is about
 * them: object-create, find-*, find-sign). Then N threads, each with its own
 * session, run the operation for T seconds after a few warm-up calls; every
 * call is timed. One JSON line goes to stdout:
 *
 *   {"op":..., "status":"ok", "threads":N, "ops":..., "elapsed_s":..., "ops_per_s":...,
 *    "ms_per_op":..., "bytes_per_op":..., "bytes_per_s":..., "p50_ms":..., "p90_ms":...,
 *    "p99_ms":..., "setup_s":..., "fill_s":..., "objects":..., "vmhwm_kb":..., "vmrss_kb":...}
 *
 * A PKCS#11 failure gives {"op":..., "status":"n/a", "ckr":"0x...", "where":"C_..."} and
 * exit status 3 (usage errors: 2). ms_per_op is 1000 / ops_per_s (all threads);
 * the percentiles are the latencies of single calls.
 *
 * "init" times one cold start in this fresh process: dlopen + C_GetFunctionList +
 * C_Initialize up to the first C_GetSlotList / C_GetTokenInfo result.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#ifndef NULL_PTR
#define NULL_PTR NULL
#endif
#include "pkcs11.h"

#define EXIT_NA 3
#define EXIT_USAGE 2
#define DATA_LEN 32            /* what the sign operations sign: one SHA-256 digest */
#define FIND_KEY_LABEL "ctperf-find-sign"
#define FILL_APPLICATION "ctperf-fill"
#define CREATE_APPLICATION "ctperf-create"

static const CK_BYTE P256_PARAMS[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const CK_BYTE ED25519_PARAMS[] = {0x06, 0x03, 0x2b, 0x65, 0x70};  /* OID 1.3.101.112 */
static const CK_BYTE RSA_E[] = {0x01, 0x00, 0x01};
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* -- time, output --------------------------------------------------------------- */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *op_name = "?";

static void na(const char *where, CK_RV rv)
{
    printf("{\"op\":\"%s\",\"status\":\"n/a\",\"ckr\":\"0x%08lx\",\"where\":\"%s\"}\n",
           op_name, (unsigned long)rv, where);
    fflush(stdout);
    exit(EXIT_NA);
}

static void usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ctperf-driver: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) {
        fputs("ctperf-driver: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static long status_kb(const char *field)
{
    char line[256];
    long value = -1;
    size_t len = strlen(field);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, len) && line[len] == ':') {
            value = strtol(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return value;
}

/* -- the module --------------------------------------------------------------------- */
struct options {
    const char *module, *op, *pin, *so_pin, *token, *label;
    long slot;
    int threads, warmup;
    double seconds;
};

static CK_FUNCTION_LIST_PTR P11;

#define CHECK(call, where)                  \
    do {                                    \
        CK_RV rv_ = (call);                 \
        if (rv_ != CKR_OK)                  \
            na(where, rv_);                 \
    } while (0)

static double t_dlopen;

static void open_module(const char *path)
{
    CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
    CK_C_INITIALIZE_ARGS args;
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle)
        usage("cannot load %s: %s", path, dlerror());
    t_dlopen = now();
    *(void **)&get_list = dlsym(handle, "C_GetFunctionList");
    if (!get_list)
        usage("%s has no C_GetFunctionList", path);
    CHECK(get_list(&P11), "C_GetFunctionList");
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    CHECK(P11->C_Initialize(&args), "C_Initialize");
}

/* Slot of the token labelled `label` (space padded in CK_TOKEN_INFO), or of the first
 * token that is not initialised yet (label NULL). */
static CK_SLOT_ID find_slot(const char *label)
{
    CK_ULONG count = 0, i;
    CK_SLOT_ID *slots;
    CK_TOKEN_INFO info;
    char padded[32];
    if (label) {
        size_t len = strlen(label);
        if (len > 32)
            usage("token label longer than 32 bytes");
        memset(padded, ' ', sizeof padded);
        memcpy(padded, label, len);
    }
    CHECK(P11->C_GetSlotList(CK_TRUE, NULL, &count), "C_GetSlotList");
    slots = xmalloc(count * sizeof *slots);
    CHECK(P11->C_GetSlotList(CK_TRUE, slots, &count), "C_GetSlotList");
    for (i = 0; i < count; i++) {
        CHECK(P11->C_GetTokenInfo(slots[i], &info), "C_GetTokenInfo");
        if (label ? !memcmp(info.label, padded, sizeof padded) : !(info.flags & CKF_TOKEN_INITIALIZED)) {
            CK_SLOT_ID slot = slots[i];
            free(slots);
            return slot;
        }
    }
    free(slots);
    if (label)
        usage("no token labelled '%s'", label);
    usage("no uninitialised token: give --slot");
    return 0;
}

static void init_token(const struct options *o)
{
    CK_UTF8CHAR label[32];
    CK_SESSION_HANDLE s;
    CK_SLOT_ID slot = o->slot >= 0 ? (CK_SLOT_ID)o->slot : find_slot(NULL);
    size_t len = strlen(o->label);
    if (!o->so_pin || !o->pin || len > 32)
        usage("init-token needs --so-pin, --pin and a --label of at most 32 bytes");
    memset(label, ' ', sizeof label);
    memcpy(label, o->label, len);
    CHECK(P11->C_InitToken(slot, (CK_UTF8CHAR_PTR)o->so_pin, strlen(o->so_pin), label), "C_InitToken");
    /* SoftHSM gives an initialised token a new slot ID: look it up again by label. */
    slot = find_slot(o->label);
    CHECK(P11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), "C_OpenSession");
    CHECK(P11->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)o->so_pin, strlen(o->so_pin)), "C_Login(SO)");
    CHECK(P11->C_InitPIN(s, (CK_UTF8CHAR_PTR)o->pin, strlen(o->pin)), "C_InitPIN");
    CHECK(P11->C_Logout(s), "C_Logout");
    CHECK(P11->C_CloseSession(s), "C_CloseSession");
    printf("{\"op\":\"init-token\",\"status\":\"ok\",\"slot\":%lu}\n", (unsigned long)slot);
}

static void cold_start(const char *path)
{
    double t0 = now(), t_init, t_first;
    CK_ULONG count = 0;
    CK_SLOT_ID *slots;
    CK_TOKEN_INFO info;
    open_module(path);
    t_init = now();
    CHECK(P11->C_GetSlotList(CK_TRUE, NULL, &count), "C_GetSlotList");
    if (!count)
        usage("the module lists no token");
    slots = xmalloc(count * sizeof *slots);
    CHECK(P11->C_GetSlotList(CK_TRUE, slots, &count), "C_GetSlotList");
    CHECK(P11->C_GetTokenInfo(slots[0], &info), "C_GetTokenInfo");
    t_first = now();
    free(slots);
    printf("{\"op\":\"init\",\"status\":\"ok\",\"threads\":1,\"ops\":1,\"elapsed_s\":%.6f,"
           "\"ops_per_s\":%.3f,\"ms_per_op\":%.3f,\"bytes_per_op\":0,\"bytes_per_s\":0,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"dlopen_ms\":%.3f,\"initialize_ms\":%.3f,\"first_result_ms\":%.3f}\n",
           t_first - t0, 1.0 / (t_first - t0), (t_first - t0) * 1e3,
           (t_first - t0) * 1e3, (t_first - t0) * 1e3, (t_first - t0) * 1e3,
           (t_dlopen - t0) * 1e3, (t_init - t_dlopen) * 1e3, (t_first - t0) * 1e3);
    fflush(stdout);
    P11->C_Finalize(NULL);
}

/* -- keys and objects ------------------------------------------------------------------ */
struct ctx {
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE main;
    CK_OBJECT_HANDLE key, pub, target;  /* the operation's key; public half; key to wrap */
    CK_BYTE data[DATA_LEN];
    CK_BYTE *input;                     /* bytes_per_op bytes of input */
    CK_BYTE sig[512];
    CK_ULONG sig_len;
    CK_BYTE point[160];                 /* peer's public point for ECDH (raw) */
    CK_ULONG point_len;
    long fill;                          /* find-N: N */
    long fill_done;                     /* objects created by this run's fill */
    double fill_s;
};

#define ATTR(type, value, len) {(type), (CK_VOID_PTR)(value), (CK_ULONG)(len)}
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static CK_OBJECT_HANDLE secret_key(struct ctx *c, CK_MECHANISM_TYPE mech, CK_ATTRIBUTE_TYPE usage,
                                   CK_ATTRIBUTE_TYPE usage2, CK_BBOOL extractable)
{
    CK_MECHANISM m = {mech, NULL, 0};
    CK_ULONG len = 32;
    CK_OBJECT_HANDLE h;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_VALUE_LEN, &len, sizeof len), ATTR(CKA_TOKEN, &no, 1),
        ATTR(usage, &yes, 1), ATTR(usage2, &yes, 1),
        ATTR(CKA_SENSITIVE, extractable ? &no : &yes, 1), ATTR(CKA_EXTRACTABLE, &extractable, 1),
    };
    CHECK(P11->C_GenerateKey(c->main, &m, t, COUNT(t), &h), "C_GenerateKey");
    return h;
}

static void rsa_pair(struct ctx *c)
{
    CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG bits = 2048;
    static const char label[] = "ctperf-rsa-2048";
    CK_ATTRIBUTE pub[] = {
        ATTR(CKA_MODULUS_BITS, &bits, sizeof bits), ATTR(CKA_PUBLIC_EXPONENT, RSA_E, sizeof RSA_E),
        ATTR(CKA_TOKEN, &no, 1), ATTR(CKA_VERIFY, &yes, 1), ATTR(CKA_LABEL, label, sizeof label - 1),
    };
    CK_ATTRIBUTE priv[] = {
        ATTR(CKA_TOKEN, &no, 1), ATTR(CKA_PRIVATE, &yes, 1), ATTR(CKA_SENSITIVE, &yes, 1),
        ATTR(CKA_SIGN, &yes, 1), ATTR(CKA_LABEL, label, sizeof label - 1),
    };
    CHECK(P11->C_GenerateKeyPair(c->main, &m, pub, COUNT(pub), priv, COUNT(priv), &c->pub, &c->key),
          "C_GenerateKeyPair");
}

static void ec_pair(struct ctx *c, CK_MECHANISM_TYPE mech, const CK_BYTE *params, size_t params_len,
                    CK_ATTRIBUTE_TYPE usage, CK_BBOOL token, const char *label,
                    CK_OBJECT_HANDLE *pub_out, CK_OBJECT_HANDLE *priv_out)
{
    CK_MECHANISM m = {mech, NULL, 0};
    CK_ATTRIBUTE pub[] = {
        ATTR(CKA_EC_PARAMS, params, params_len), ATTR(CKA_TOKEN, &token, 1),
        ATTR(CKA_VERIFY, &yes, 1), ATTR(CKA_LABEL, label, strlen(label)),
    };
    CK_ATTRIBUTE priv[] = {
        ATTR(CKA_TOKEN, &token, 1), ATTR(CKA_PRIVATE, &yes, 1), ATTR(CKA_SENSITIVE, &yes, 1),
        ATTR(usage, &yes, 1), ATTR(CKA_LABEL, label, strlen(label)),
    };
    CHECK(P11->C_GenerateKeyPair(c->main, &m, pub, COUNT(pub), priv, COUNT(priv), pub_out, priv_out),
          "C_GenerateKeyPair");
}

static CK_RV sign_once(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE mech, CK_OBJECT_HANDLE key,
                       const CK_BYTE *data, CK_ULONG len, CK_BYTE *out, CK_ULONG *out_len,
                       const char **where)
{
    CK_MECHANISM m = {mech, NULL, 0};
    CK_RV rv = P11->C_SignInit(s, &m, key);
    if (rv != CKR_OK) {
        *where = "C_SignInit";
        return rv;
    }
    rv = P11->C_Sign(s, (CK_BYTE_PTR)data, len, out, out_len);
    if (rv != CKR_OK)
        *where = "C_Sign";
    return rv;
}

/* Count the objects matching one attribute (fill objects, the find-sign key). */
static long count_objects(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *first)
{
    CK_OBJECT_HANDLE batch[1024];
    CK_ULONG got;
    long total = 0;
    CHECK(P11->C_FindObjectsInit(s, t, n), "C_FindObjectsInit");
    do {
        CHECK(P11->C_FindObjects(s, batch, COUNT(batch), &got), "C_FindObjects");
        if (got && !total && first)
            *first = batch[0];
        total += (long)got;
    } while (got);
    CHECK(P11->C_FindObjectsFinal(s), "C_FindObjectsFinal");
    return total;
}

static CK_RV create_data(CK_SESSION_HANDLE s, const char *application, const char *label,
                         const CK_BYTE *value, CK_OBJECT_HANDLE *h)
{
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_TOKEN, &yes, 1), ATTR(CKA_PRIVATE, &no, 1),
        ATTR(CKA_LABEL, label, strlen(label)), ATTR(CKA_APPLICATION, application, strlen(application)),
        ATTR(CKA_VALUE, value, 32),
    };
    return P11->C_CreateObject(s, t, COUNT(t), h);
}

/* find-N: the token holds N public data objects labelled fill-0 .. fill-(N-1). Fills
 * only what is missing, so the sizes can be run in ascending order on one token. */
static void fill_token(struct ctx *c)
{
    CK_ATTRIBUTE app = ATTR(CKA_APPLICATION, FILL_APPLICATION, strlen(FILL_APPLICATION));
    long have = count_objects(c->main, &app, 1, NULL), i;
    double t0 = now(), shown = t0;
    char label[32];
    CK_OBJECT_HANDLE h;
    if (have > c->fill) {
        fprintf(stderr, "ctperf-driver: the token holds %ld fill objects, more than %ld: "
                "run the find sizes in ascending order on a fresh token\n", have, c->fill);
        na("fill", CKR_GENERAL_ERROR);
    }
    for (i = have; i < c->fill; i++) {
        snprintf(label, sizeof label, "fill-%ld", i);
        CHECK(create_data(c->main, FILL_APPLICATION, label, c->data, &h), "C_CreateObject(fill)");
        if (now() - shown >= 5.0) {
            shown = now();
            fprintf(stderr, "ctperf-driver: filling the token: %ld/%ld objects (%.0f s)\n",
                    i + 1, c->fill, shown - t0);
        }
    }
    c->fill_done = c->fill - have;
    c->fill_s = now() - t0;
}

/* -- the operations --------------------------------------------------------------- */
struct worker {
    struct ctx *c;
    CK_SESSION_HANDLE s;
    int index;
    unsigned long counter;
    double *lat;
    size_t n, cap;
    CK_OBJECT_HANDLE *made;   /* token objects to destroy after the run */
    size_t nmade, capmade;
    CK_BYTE *out;
    CK_RV rv;
    const char *where;
    double t_end;
};

#define RUN(call, name)             \
    do {                            \
        CK_RV rv_ = (call);         \
        if (rv_ != CKR_OK) {        \
            w->where = name;        \
            return rv_;             \
        }                           \
    } while (0)

static void keep(struct worker *w, CK_OBJECT_HANDLE h)
{
    if (w->nmade == w->capmade) {
        w->capmade = w->capmade ? 2 * w->capmade : 1024;
        w->made = realloc(w->made, w->capmade * sizeof *w->made);
        if (!w->made)
            usage("out of memory");
    }
    w->made[w->nmade++] = h;
}

static CK_RV op_session(struct worker *w)
{
    CK_SESSION_HANDLE s;
    RUN(P11->C_OpenSession(w->c->slot, CKF_SERIAL_SESSION, NULL, NULL, &s), "C_OpenSession");
    RUN(P11->C_CloseSession(s), "C_CloseSession");
    return CKR_OK;
}

static CK_RV op_random(struct worker *w)
{
    RUN(P11->C_GenerateRandom(w->s, w->out, 32), "C_GenerateRandom");
    return CKR_OK;
}

static CK_RV op_digest(struct worker *w)
{
    CK_MECHANISM m = {CKM_SHA256, NULL, 0};
    CK_ULONG len = 32;
    RUN(P11->C_DigestInit(w->s, &m), "C_DigestInit");
    RUN(P11->C_Digest(w->s, w->c->input, 64, w->out, &len), "C_Digest");
    return CKR_OK;
}

static CK_RV op_getattr(struct worker *w)
{
    CK_BYTE label[64], modulus[512];
    CK_ATTRIBUTE t[] = {ATTR(CKA_LABEL, label, sizeof label), ATTR(CKA_MODULUS, modulus, sizeof modulus)};
    RUN(P11->C_GetAttributeValue(w->s, w->c->pub, t, COUNT(t)), "C_GetAttributeValue");
    return CKR_OK;
}

static CK_RV op_aes_cbc(struct worker *w)
{
    CK_BYTE iv[16] = {0};
    CK_MECHANISM m = {CKM_AES_CBC, iv, sizeof iv};
    CK_ULONG len = 1024;
    RUN(P11->C_EncryptInit(w->s, &m, w->c->key), "C_EncryptInit");
    RUN(P11->C_Encrypt(w->s, w->c->input, 1024, w->out, &len), "C_Encrypt");
    return CKR_OK;
}

static CK_RV aes_gcm(struct worker *w, CK_ULONG size)
{
    CK_BYTE iv[12] = {0};
    CK_GCM_PARAMS p = {iv, sizeof iv, 96, NULL, 0, 128};
    CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof p};
    CK_ULONG len = size + 16;
    unsigned long n = ++w->counter;
    memcpy(iv, &w->index, sizeof w->index);   /* a fresh IV per call and thread */
    memcpy(iv + 4, &n, sizeof n);
    RUN(P11->C_EncryptInit(w->s, &m, w->c->key), "C_EncryptInit");
    RUN(P11->C_Encrypt(w->s, w->c->input, size, w->out, &len), "C_Encrypt");
    return CKR_OK;
}

static CK_RV op_aes_gcm(struct worker *w) { return aes_gcm(w, 1 << 20); }
static CK_RV op_aes_gcm_4k(struct worker *w) { return aes_gcm(w, 4096); }

static CK_RV op_hmac(struct worker *w)
{
    CK_ULONG len = 32;
    return sign_once(w->s, CKM_SHA256_HMAC, w->c->key, w->c->input, 64, w->out, &len, &w->where);
}

static CK_RV op_rsa_sign(struct worker *w)
{
    CK_ULONG len = 512;
    return sign_once(w->s, CKM_SHA256_RSA_PKCS, w->c->key, w->c->data, DATA_LEN, w->out, &len, &w->where);
}

static CK_RV op_rsa_verify(struct worker *w)
{
    CK_MECHANISM m = {CKM_SHA256_RSA_PKCS, NULL, 0};
    RUN(P11->C_VerifyInit(w->s, &m, w->c->pub), "C_VerifyInit");
    RUN(P11->C_Verify(w->s, w->c->data, DATA_LEN, w->c->sig, w->c->sig_len), "C_Verify");
    return CKR_OK;
}

static CK_RV op_ecdsa(struct worker *w)
{
    CK_ULONG len = 160;
    return sign_once(w->s, CKM_ECDSA, w->c->key, w->c->data, DATA_LEN, w->out, &len, &w->where);
}

static CK_RV op_eddsa(struct worker *w)
{
    CK_ULONG len = 160;
    return sign_once(w->s, CKM_EDDSA, w->c->key, w->c->data, DATA_LEN, w->out, &len, &w->where);
}

static CK_RV op_ecdh(struct worker *w)
{
    CK_ECDH1_DERIVE_PARAMS p = {CKD_NULL, 0, NULL, w->c->point_len, w->c->point};
    CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof p};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_ULONG len = 32;
    CK_OBJECT_HANDLE h;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_KEY_TYPE, &type, sizeof type),
        ATTR(CKA_VALUE_LEN, &len, sizeof len), ATTR(CKA_TOKEN, &no, 1),
        ATTR(CKA_SENSITIVE, &no, 1), ATTR(CKA_EXTRACTABLE, &yes, 1),
    };
    /* The derived session object lives until the thread's session closes. */
    RUN(P11->C_DeriveKey(w->s, &m, w->c->key, t, COUNT(t), &h), "C_DeriveKey");
    return CKR_OK;
}

static CK_RV op_aes_kw(struct worker *w)
{
    CK_MECHANISM m = {CKM_AES_KEY_WRAP, NULL, 0};
    CK_ULONG len = 64;
    RUN(P11->C_WrapKey(w->s, &m, w->c->key, w->c->target, w->out, &len), "C_WrapKey");
    return CKR_OK;
}

static CK_RV op_aes_keygen(struct worker *w)
{
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_OBJECT_HANDLE h;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_VALUE_LEN, &len, sizeof len), ATTR(CKA_TOKEN, &no, 1),
        ATTR(CKA_ENCRYPT, &yes, 1), ATTR(CKA_DECRYPT, &yes, 1),
    };
    RUN(P11->C_GenerateKey(w->s, &m, t, COUNT(t), &h), "C_GenerateKey");
    return CKR_OK;
}

static CK_RV op_create(struct worker *w)
{
    char label[48];
    CK_OBJECT_HANDLE h;
    snprintf(label, sizeof label, "ctperf-%d-%lu", w->index, ++w->counter);
    RUN(create_data(w->s, CREATE_APPLICATION, label, w->c->data, &h), "C_CreateObject");
    keep(w, h);
    return CKR_OK;
}

static CK_RV op_find(struct worker *w)
{
    char label[32];
    CK_OBJECT_HANDLE found[2];
    CK_ULONG got = 0;
    /* a different object each call, spread over the whole token */
    long i = (long)((w->counter++ * 7919UL + (unsigned long)w->index * 104729UL) % (unsigned long)w->c->fill);
    CK_ATTRIBUTE t[] = {ATTR(CKA_LABEL, label, 0)};
    t[0].ulValueLen = (CK_ULONG)snprintf(label, sizeof label, "fill-%ld", i);
    RUN(P11->C_FindObjectsInit(w->s, t, 1), "C_FindObjectsInit");
    RUN(P11->C_FindObjects(w->s, found, 2, &got), "C_FindObjects");
    RUN(P11->C_FindObjectsFinal(w->s), "C_FindObjectsFinal");
    if (got != 1) {
        w->where = "C_FindObjects: not exactly one object found";
        return CKR_GENERAL_ERROR;
    }
    return CKR_OK;
}

static CK_RV op_find_sign(struct worker *w)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_OBJECT_HANDLE key;
    CK_ULONG got = 0, len = 160;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_LABEL, FIND_KEY_LABEL, strlen(FIND_KEY_LABEL)),
    };
    RUN(P11->C_FindObjectsInit(w->s, t, COUNT(t)), "C_FindObjectsInit");
    RUN(P11->C_FindObjects(w->s, &key, 1, &got), "C_FindObjects");
    RUN(P11->C_FindObjectsFinal(w->s), "C_FindObjectsFinal");
    if (got != 1) {
        w->where = "C_FindObjects: key not found";
        return CKR_GENERAL_ERROR;
    }
    return sign_once(w->s, CKM_ECDSA, key, w->c->data, DATA_LEN, w->out, &len, &w->where);
}

/* -- setups ------------------------------------------------------------------------------ */
static void setup_none(struct ctx *c) { (void)c; }

static void setup_rsa(struct ctx *c)
{
    const char *where = "";
    rsa_pair(c);
    c->sig_len = sizeof c->sig;
    CHECK(sign_once(c->main, CKM_SHA256_RSA_PKCS, c->key, c->data, DATA_LEN, c->sig, &c->sig_len, &where),
          where);
}

static void setup_aes(struct ctx *c) { c->key = secret_key(c, CKM_AES_KEY_GEN, CKA_ENCRYPT, CKA_DECRYPT, CK_FALSE); }
static void setup_hmac(struct ctx *c)
{
    c->key = secret_key(c, CKM_GENERIC_SECRET_KEY_GEN, CKA_SIGN, CKA_VERIFY, CK_FALSE);
}

static void setup_p256(struct ctx *c)
{
    ec_pair(c, CKM_EC_KEY_PAIR_GEN, P256_PARAMS, sizeof P256_PARAMS, CKA_SIGN, CK_FALSE, "ctperf-p256",
            &c->pub, &c->key);
}

static void setup_ed25519(struct ctx *c)
{
    ec_pair(c, CKM_EC_EDWARDS_KEY_PAIR_GEN, ED25519_PARAMS, sizeof ED25519_PARAMS, CKA_SIGN, CK_FALSE,
            "ctperf-ed25519", &c->pub, &c->key);
}

static void setup_ecdh(struct ctx *c)
{
    CK_OBJECT_HANDLE peer_pub, peer_priv;
    CK_BYTE der[160];
    CK_ATTRIBUTE t = ATTR(CKA_EC_POINT, der, sizeof der);
    ec_pair(c, CKM_EC_KEY_PAIR_GEN, P256_PARAMS, sizeof P256_PARAMS, CKA_DERIVE, CK_FALSE, "ctperf-ecdh",
            &c->pub, &c->key);
    ec_pair(c, CKM_EC_KEY_PAIR_GEN, P256_PARAMS, sizeof P256_PARAMS, CKA_DERIVE, CK_FALSE, "ctperf-peer",
            &peer_pub, &peer_priv);
    CHECK(P11->C_GetAttributeValue(c->main, peer_pub, &t, 1), "C_GetAttributeValue(CKA_EC_POINT)");
    /* CKA_EC_POINT is a DER OCTET STRING; ECDH1 takes the raw point */
    if (t.ulValueLen == 67 && der[0] == 0x04 && der[1] == 65) {
        c->point_len = 65;
        memcpy(c->point, der + 2, 65);
    } else {
        c->point_len = t.ulValueLen;
        memcpy(c->point, der, t.ulValueLen);
    }
}

static void setup_aes_kw(struct ctx *c)
{
    c->key = secret_key(c, CKM_AES_KEY_GEN, CKA_WRAP, CKA_UNWRAP, CK_FALSE);
    c->target = secret_key(c, CKM_AES_KEY_GEN, CKA_ENCRYPT, CKA_DECRYPT, CK_TRUE);
}

static void setup_find_sign(struct ctx *c)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE t[] = {
        ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_LABEL, FIND_KEY_LABEL, strlen(FIND_KEY_LABEL)),
    };
    if (count_objects(c->main, t, COUNT(t), NULL) == 0)
        ec_pair(c, CKM_EC_KEY_PAIR_GEN, P256_PARAMS, sizeof P256_PARAMS, CKA_SIGN, CK_TRUE, FIND_KEY_LABEL,
                &c->pub, &c->key);
}

struct op {
    const char *name;
    void (*setup)(struct ctx *);
    CK_RV (*run)(struct worker *);
    size_t bytes;     /* input bytes per call, for bytes/s */
    size_t out;       /* output buffer each thread needs */
};

static const struct op OPS[] = {
    {"session", setup_none, op_session, 0, 0},
    {"random32", setup_none, op_random, 32, 32},
    {"sha256-64", setup_none, op_digest, 64, 32},
    {"getattr", setup_rsa, op_getattr, 0, 0},
    {"aes-cbc-1k", setup_aes, op_aes_cbc, 1024, 1024},
    {"aes-gcm-1m", setup_aes, op_aes_gcm, 1 << 20, (1 << 20) + 16},
    {"aes-gcm-4k", setup_aes, op_aes_gcm_4k, 4096, 4096 + 16},
    {"hmac-sha256-64", setup_hmac, op_hmac, 64, 32},
    {"rsa2048-sign", setup_rsa, op_rsa_sign, DATA_LEN, 512},
    {"rsa2048-verify", setup_rsa, op_rsa_verify, DATA_LEN, 0},
    {"p256-sign", setup_p256, op_ecdsa, DATA_LEN, 160},
    {"ed25519-sign", setup_ed25519, op_eddsa, DATA_LEN, 160},
    {"ecdh-p256", setup_ecdh, op_ecdh, 0, 0},
    {"aes-kw-256", setup_aes_kw, op_aes_kw, 32, 64},
    {"aes-keygen", setup_none, op_aes_keygen, 0, 0},
    {"object-create", setup_none, op_create, 0, 0},
    {"find", fill_token, op_find, 0, 0},           /* find-<N>k */
    {"find-sign", setup_find_sign, op_find_sign, DATA_LEN, 160},
};

static const struct op *lookup_op(const char *name, long *fill)
{
    size_t i;
    char tail[8];
    long k;
    int is_find = sscanf(name, "find-%ldk%7s", &k, tail) == 1 && k > 0 && k <= 100000;
    if (is_find)
        *fill = k * 1000;
    for (i = 0; i < COUNT(OPS); i++)
        if (is_find ? OPS[i].run == op_find : !strcmp(OPS[i].name, name) && OPS[i].run != op_find)
            return &OPS[i];
    return NULL;
}

/* -- the run ----------------------------------------------------------------------------- */
static const struct op *OP;
static pthread_barrier_t ready, go;
static double t_start, deadline;
static int warmup_calls;

static void record(struct worker *w, double seconds)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 4096;
        w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
        if (!w->lat)
            usage("out of memory");
    }
    w->lat[w->n++] = seconds;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int i;
    double t1, t2 = 0;
    w->rv = P11->C_OpenSession(w->c->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &w->s);
    if (w->rv != CKR_OK)
        w->where = "C_OpenSession";
    for (i = 0; i < warmup_calls && w->rv == CKR_OK; i++)
        w->rv = OP->run(w);
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    if (w->rv != CKR_OK)
        return NULL;
    for (;;) {
        t1 = now();
        if (t1 >= deadline)
            break;
        w->rv = OP->run(w);
        t2 = now();
        if (w->rv != CKR_OK)
            break;
        record(w, t2 - t1);
    }
    w->t_end = t2 > 0 ? t2 : now();
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p)
{
    size_t rank;
    if (!n)
        return 0;
    rank = (size_t)(p / 100.0 * (double)n + 0.999999);  /* nearest rank */
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static void bench(const struct options *o)
{
    struct ctx c;
    struct worker *w;
    pthread_t *tids;
    double t0, setup_s, end = 0, *all, elapsed, rate;
    size_t total = 0, k;
    int i;
    long fill = 0;

    OP = lookup_op(o->op, &fill);
    if (!OP)
        usage("unknown operation '%s'", o->op);
    memset(&c, 0, sizeof c);
    c.fill = fill;
    memset(c.data, 0x5a, sizeof c.data);
    c.input = xmalloc(OP->bytes > 1024 ? OP->bytes : 1024);
    memset(c.input, 0xa5, OP->bytes > 1024 ? OP->bytes : 1024);

    t0 = now();
    open_module(o->module);
    c.slot = o->token ? find_slot(o->token) : (CK_SLOT_ID)(o->slot >= 0 ? o->slot : 0);
    CHECK(P11->C_OpenSession(c.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &c.main), "C_OpenSession");
    if (o->pin) {
        CK_RV rv = P11->C_Login(c.main, CKU_USER, (CK_UTF8CHAR_PTR)o->pin, strlen(o->pin));
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
            na("C_Login", rv);
    }
    OP->setup(&c);
    setup_s = now() - t0 - c.fill_s;

    w = xmalloc(o->threads * sizeof *w);
    tids = xmalloc(o->threads * sizeof *tids);
    memset(w, 0, o->threads * sizeof *w);
    warmup_calls = o->warmup;
    pthread_barrier_init(&ready, NULL, (unsigned)o->threads + 1);
    pthread_barrier_init(&go, NULL, (unsigned)o->threads + 1);
    for (i = 0; i < o->threads; i++) {
        w[i].c = &c;
        w[i].index = i;
        w[i].out = xmalloc(OP->out ? OP->out : 64);
        if (pthread_create(&tids[i], NULL, worker_main, &w[i]))
            usage("cannot start thread %d", i);
    }
    pthread_barrier_wait(&ready);
    t_start = now();
    deadline = t_start + o->seconds;
    pthread_barrier_wait(&go);
    for (i = 0; i < o->threads; i++)
        pthread_join(tids[i], NULL);
    for (i = 0; i < o->threads; i++) {
        if (w[i].rv != CKR_OK)
            na(w[i].where ? w[i].where : "?", w[i].rv);
        total += w[i].n;
        if (w[i].t_end > end)
            end = w[i].t_end;
    }

    all = xmalloc(total * sizeof *all);
    for (i = 0, k = 0; i < o->threads; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
        k += w[i].n;
    }
    qsort(all, total, sizeof *all, cmp_double);
    elapsed = end - t_start;
    rate = total / elapsed;
    printf("{\"op\":\"%s\",\"status\":\"ok\",\"threads\":%d,\"ops\":%lu,\"elapsed_s\":%.6f,"
           "\"ops_per_s\":%.3f,\"ms_per_op\":%.6f,\"bytes_per_op\":%lu,\"bytes_per_s\":%.1f,"
           "\"p50_ms\":%.6f,\"p90_ms\":%.6f,\"p99_ms\":%.6f,\"setup_s\":%.3f,\"fill_s\":%.3f,"
           "\"filled\":%ld,\"objects\":%ld,\"vmhwm_kb\":%ld,\"vmrss_kb\":%ld}\n",
           op_name, o->threads, (unsigned long)total, elapsed, rate, total ? 1e3 / rate : 0.0,
           (unsigned long)OP->bytes, rate * (double)OP->bytes,
           percentile(all, total, 50) * 1e3, percentile(all, total, 90) * 1e3,
           percentile(all, total, 99) * 1e3, setup_s, c.fill_s, c.fill_done, c.fill,
           status_kb("VmHWM"), status_kb("VmRSS"));
    fflush(stdout);

    /* Untimed clean-up: token objects made by the run go; session objects go with their session. */
    for (i = 0; i < o->threads; i++) {
        for (k = 0; k < w[i].nmade; k++)
            if (P11->C_DestroyObject(w[i].s, w[i].made[k]) != CKR_OK) {
                fprintf(stderr, "ctperf-driver: could not destroy a created object\n");
                break;
            }
        P11->C_CloseSession(w[i].s);
        free(w[i].lat);
        free(w[i].made);
        free(w[i].out);
    }
    P11->C_CloseSession(c.main);
    P11->C_Finalize(NULL);
    free(all);
    free(w);
    free(tids);
    free(c.input);
}

/* -- main --------------------------------------------------------------------------------- */
static const char *arg_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage("%s needs a value", argv[*i]);
    return argv[++*i];
}

static long arg_long(const char *name, const char *text, long low, long high)
{
    char *end;
    long value;
    errno = 0;
    value = strtol(text, &end, 0);
    if (errno || *end || value < low || value > high)
        usage("%s %s: expected an integer in %ld..%ld", name, text, low, high);
    return value;
}

int main(int argc, char **argv)
{
    struct options o = {NULL, NULL, NULL, NULL, NULL, "ctperf", -1, 1, 2, 2.0};
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--module"))
            o.module = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--op"))
            o.op = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--pin"))
            o.pin = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--so-pin"))
            o.so_pin = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--token"))
            o.token = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--label"))
            o.label = arg_value(argc, argv, &i);
        else if (!strcmp(a, "--slot"))
            o.slot = arg_long(a, arg_value(argc, argv, &i), 0, 0x7fffffffL);
        else if (!strcmp(a, "--threads"))
            o.threads = (int)arg_long(a, arg_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(a, "--warmup"))
            o.warmup = (int)arg_long(a, arg_value(argc, argv, &i), 0, 1000000);
        else if (!strcmp(a, "--seconds")) {
            char *end;
            const char *text = arg_value(argc, argv, &i);
            o.seconds = strtod(text, &end);
            if (*end || !(o.seconds > 0 && o.seconds <= 86400))
                usage("--seconds %s: expected a positive number", text);
        } else
            usage("unknown argument %s (see the comment at the top of driver.c)", a);
    }
    if (!o.module || !o.op)
        usage("--module and --op are required");
    op_name = o.op;
    if (!strcmp(o.op, "init"))
        cold_start(o.module);
    else if (!strcmp(o.op, "init-token")) {
        open_module(o.module);
        init_token(&o);
        P11->C_Finalize(NULL);
    } else
        bench(&o);
    return 0;
}
