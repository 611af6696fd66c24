/* ABI fuzzer: random sequences of PKCS#11 calls through the C ABI of a module.
 *
 *   fuzz MODULE SEED CALLS THREADS USER_PIN SO_PIN [SLOT]
 *
 * SLOT (default 0) is the home slot: its token must be initialised with USER_PIN
 * set; most calls naming a slot name it, the others a random one (0..4), and
 * C_InitToken is aimed at the slot after it or a random one. The harness creates real
 * objects (AES, HMAC, RSA and EC keys, a data object), then THREADS threads make
 * CALLS calls in all: random functions with valid, stale and random handles, NULL
 * wherever a pointer is passed, lengths 0/short/exact/huge, random templates and
 * mechanism parameters, calls out of order, an occasional C_Finalize/C_Initialize.
 *
 * A finding: a return code outside the PKCS#11 v2.40/3.0 list for the function
 * (CKR_GENERAL_ERROR counts: the module reports its own internal errors with it),
 * a call that takes more than 10 s (the watchdog aborts), or a crash. Findings
 * print "FINDING seed=... thread=... call=N fn rv" with the last calls of that
 * thread; the exit status is 1. THREADS=1 replays a seed exactly.
 *
 * What the harness never does, because no module can survive it: pass a pointer
 * to memory it does not own, or a length larger than the memory passed (a length
 * above every bound the module sets, e.g. (CK_ULONG)-1, is passed: it must be
 * refused without being read). Mechanism parameters of random content are built
 * from words that are either 0 or the address of a scratch buffer (as a length, an
 * address is far above any bound), so every pointer in them is NULL or valid.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "pkcs11_unix.h"

static CK_FUNCTION_LIST_3_0 *f;
static const char *user_pin, *so_pin;
static unsigned long long seed0;
static CK_SLOT_ID home;  /* the slot whose token holds the objects */
static long total_calls;
static volatile long calls_done;
static volatile int findings;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t life = PTHREAD_RWLOCK_INITIALIZER;  /* C_Finalize waits for no call in flight */

#define HUGE ((CK_ULONG)-1)
#define POOL 24
#define HISTORY 16
#define SCRATCH 65536

/* -- random numbers: splitmix64 per thread ------------------------------------ */
typedef struct { uint64_t s; } rng_t;
static uint64_t next(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static unsigned below(rng_t *r, unsigned n) { return (unsigned)(next(r) % n); }
static int chance(rng_t *r, unsigned in) { return below(r, in) == 0; }

/* -- shared handle pools: real objects and sessions, stale ones, junk ----------- */
static CK_OBJECT_HANDLE objects[POOL];
static CK_SESSION_HANDLE sessions[POOL];
static CK_ULONG nobjects, nsessions;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember(CK_ULONG *pool, CK_ULONG *n, CK_ULONG value, rng_t *r)
{
    pthread_mutex_lock(&pool_lock);
    if (*n < POOL) pool[(*n)++] = value;
    else pool[below(r, POOL)] = value;
    pthread_mutex_unlock(&pool_lock);
}

static CK_ULONG pick(CK_ULONG *pool, CK_ULONG *n, rng_t *r)
{
    switch (below(r, 10)) {
    case 0: return 0;
    case 1: return HUGE;
    case 2: return next(r) & 0xffff;
    default: {
        CK_ULONG v = 0;
        pthread_mutex_lock(&pool_lock);
        if (*n) v = pool[below(r, (unsigned)*n)];
        pthread_mutex_unlock(&pool_lock);
        return v;
    }
    }
}
#define SESSION(r) pick(sessions, &nsessions, r)
#define OBJECT(r) pick(objects, &nobjects, r)

/* -- per-thread state ----------------------------------------------------------- */
typedef struct {
    rng_t r;
    int id;
    CK_BYTE in[SCRATCH], out[SCRATCH], param[SCRATCH], scratch[SCRATCH];
    CK_ATTRIBUTE tmpl[16], inner[4];
    CK_ATTRIBUTE tmpl2[16];
    CK_MECHANISM mech;
    CK_GCM_PARAMS gcm;
    CK_RSA_PKCS_OAEP_PARAMS oaep;
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_ECDH1_DERIVE_PARAMS ecdh;
    CK_ULONG len, len2;
    const char *history[HISTORY];
    CK_RV rvs[HISTORY];
    long n;
    volatile time_t started;  /* of the call in flight, for the watchdog; 0 between calls */
} ctx_t;

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* A length for an input buffer of `have` bytes: 0, short, exact, or beyond every bound. */
static CK_ULONG in_len(ctx_t *c, CK_ULONG have)
{
    switch (below(&c->r, 8)) {
    case 0: return 0;
    case 1: return 1 + below(&c->r, 16 < have ? 16 : (unsigned)have);
    case 2: return HUGE;
    case 3: return (CK_ULONG)1 << 50;
    default: return below(&c->r, (unsigned)have + 1);
    }
}

/* A data buffer: NULL (with a length, or 0), or random bytes of a random length. */
static CK_BYTE_PTR data(ctx_t *c, CK_ULONG *len)
{
    CK_ULONG have = chance(&c->r, 3) ? 64 : 1 + below(&c->r, 4096);
    for (CK_ULONG i = 0; i < have; i += 8) {
        uint64_t v = next(&c->r);
        memcpy(c->in + i, &v, 8);
    }
    if (chance(&c->r, 12)) { *len = chance(&c->r, 2) ? 0 : 1 + below(&c->r, 64); return NULL; }
    *len = chance(&c->r, 4) ? in_len(c, have) : have;
    return c->in;
}

/* An output buffer and its length: NULL (a length query), too small, big enough, or a
 * NULL length pointer. Never a length larger than the buffer. */
static CK_BYTE_PTR out(ctx_t *c, CK_ULONG_PTR *plen)
{
    *plen = chance(&c->r, 20) ? NULL : &c->len;
    switch (below(&c->r, 5)) {
    case 0: c->len = HUGE; return NULL;
    case 1: c->len = below(&c->r, 17); return c->out;
    default: c->len = SCRATCH; return c->out;
    }
}

static const CK_ATTRIBUTE_TYPE TYPES[] = {
    CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_APPLICATION, CKA_VALUE, CKA_OBJECT_ID,
    CKA_KEY_TYPE, CKA_ID, CKA_SENSITIVE, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN,
    CKA_VERIFY, CKA_DERIVE, CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1, CKA_VALUE_LEN, CKA_EXTRACTABLE, CKA_LOCAL, CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE, CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE, CKA_EC_PARAMS, CKA_EC_POINT,
    CKA_CHECK_VALUE, CKA_START_DATE, CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED, CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE, CKA_DERIVE_TEMPLATE, CKA_ALLOWED_MECHANISMS,
    CKA_CERTIFICATE_TYPE, CKA_SUBJECT, CKA_KEY_GEN_MECHANISM, 0x80000001UL, 0x12345UL, 0x80001234UL,
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

static const CK_ULONG CLASSES[] = {CKO_DATA, CKO_CERTIFICATE, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY,
                                   CKO_SECRET_KEY, CKO_DOMAIN_PARAMETERS, 0x7777};
static const CK_ULONG KEYTYPES[] = {CKK_AES, CKK_RSA, CKK_EC, CKK_GENERIC_SECRET, CKK_DES3, CKK_DES2,
                                    CKK_DSA, CKK_DH, CKK_EC_EDWARDS, CKK_SHA256_HMAC, 0x4444};

/* One attribute value: a type-appropriate value most of the time, junk otherwise. */
static void value(ctx_t *c, CK_ATTRIBUTE *a, CK_BYTE *pool, int depth)
{
    CK_ULONG t = a->type;
    unsigned kind = below(&c->r, 10);
    if (kind == 0) { a->pValue = NULL; a->ulValueLen = chance(&c->r, 2) ? 0 : 1 + below(&c->r, 8); return; }
    if (kind == 1) { a->pValue = pool; a->ulValueLen = chance(&c->r, 2) ? HUGE : (CK_ULONG)1 << 30; return; }
    if (t == CKA_WRAP_TEMPLATE || t == CKA_UNWRAP_TEMPLATE || t == CKA_DERIVE_TEMPLATE) {
        if (depth || chance(&c->r, 3)) { a->pValue = pool; a->ulValueLen = 1 + below(&c->r, 23); return; }
        CK_ULONG n = below(&c->r, 4);
        for (CK_ULONG i = 0; i < n; i++) {
            c->inner[i].type = TYPES[below(&c->r, NTYPES)];
            value(c, &c->inner[i], pool + 512 + 64 * i, 1);
        }
        a->pValue = c->inner;
        a->ulValueLen = n * sizeof(CK_ATTRIBUTE);
        return;
    }
    for (int i = 0; i < 64; i++) pool[i] = (CK_BYTE)next(&c->r);
    a->pValue = pool;
    switch (t) {
    case CKA_CLASS: *(CK_ULONG *)pool = CLASSES[below(&c->r, 7)]; a->ulValueLen = sizeof(CK_ULONG); break;
    case CKA_KEY_TYPE: *(CK_ULONG *)pool = KEYTYPES[below(&c->r, 11)]; a->ulValueLen = sizeof(CK_ULONG); break;
    case CKA_VALUE_LEN: *(CK_ULONG *)pool = chance(&c->r, 2) ? 16u << below(&c->r, 2) : next(&c->r) % 70;
        a->ulValueLen = sizeof(CK_ULONG); break;
    case CKA_MODULUS_BITS: *(CK_ULONG *)pool = chance(&c->r, 2) ? 1024 : next(&c->r) % 5000;
        a->ulValueLen = sizeof(CK_ULONG); break;
    case CKA_TOKEN: case CKA_PRIVATE: case CKA_SENSITIVE: case CKA_ENCRYPT: case CKA_DECRYPT: case CKA_WRAP:
    case CKA_UNWRAP: case CKA_SIGN: case CKA_VERIFY: case CKA_DERIVE: case CKA_EXTRACTABLE: case CKA_MODIFIABLE:
    case CKA_COPYABLE: case CKA_DESTROYABLE: case CKA_TRUSTED: case CKA_LOCAL:
        pool[0] = chance(&c->r, 8) ? (CK_BYTE)next(&c->r) : (CK_BYTE)below(&c->r, 2);
        a->ulValueLen = chance(&c->r, 10) ? below(&c->r, 9) : 1; break;
    default: a->ulValueLen = below(&c->r, 65);
    }
    if (chance(&c->r, 15)) a->ulValueLen = below(&c->r, 65);
}

/* A template of 0..8 attributes, sometimes a sensible secret key one, sometimes NULL. */
static CK_ATTRIBUTE_PTR template(ctx_t *c, CK_ATTRIBUTE *t, CK_BYTE *pool, CK_ULONG *count)
{
    if (chance(&c->r, 15)) { *count = chance(&c->r, 2) ? 0 : 1 + below(&c->r, 3); return NULL; }
    if (chance(&c->r, 40)) { *count = chance(&c->r, 2) ? HUGE : (CK_ULONG)1 << 20; return t; }
    CK_ULONG n = below(&c->r, 9);
    for (CK_ULONG i = 0; i < n; i++) {
        t[i].type = TYPES[below(&c->r, NTYPES)];
        value(c, &t[i], pool + 64 * (i % 8), 0);
    }
    if (n && chance(&c->r, 2)) {  /* steer toward templates that get past the first checks */
        t[0].type = CKA_CLASS; value(c, &t[0], pool, 0);
        if (n > 1) { t[1].type = CKA_TOKEN; t[1].pValue = chance(&c->r, 3) ? &yes : &no; t[1].ulValueLen = 1; }
    }
    *count = n;
    return t;
}

/* For C_GetAttributeValue: pValue NULL (sizes), or zeroed room (nested templates get
 * NULL pointers inside, i.e. a size query of their own). */
static CK_ATTRIBUTE_PTR get_template(ctx_t *c, CK_ULONG *count)
{
    CK_ULONG n = 1 + below(&c->r, 8);
    memset(c->out, 0, 4096);
    for (CK_ULONG i = 0; i < n; i++) {
        c->tmpl[i].type = TYPES[below(&c->r, NTYPES)];
        if (chance(&c->r, 3)) { c->tmpl[i].pValue = NULL; c->tmpl[i].ulValueLen = below(&c->r, 3) ? 0 : HUGE; }
        else { c->tmpl[i].pValue = c->out + 512 * i; c->tmpl[i].ulValueLen = below(&c->r, 2) ? 512 : below(&c->r, 9); }
    }
    if (chance(&c->r, 20)) { *count = 1 + below(&c->r, 3); return NULL; }
    *count = n;
    return c->tmpl;
}

static const CK_MECHANISM_TYPE MECHS[] = {
    CKM_AES_KEY_GEN, CKM_AES_ECB, CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_CTR, CKM_AES_GCM, CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD, CKM_AES_CMAC, CKM_AES_MAC, CKM_SHA256, CKM_SHA_1, CKM_SHA512, CKM_MD5,
    CKM_SHA256_HMAC, CKM_SHA_1_HMAC, CKM_GENERIC_SECRET_KEY_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS,
    CKM_RSA_X_509, CKM_RSA_PKCS_OAEP, CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS,
    CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDH1_DERIVE, CKM_DES3_KEY_GEN, CKM_DES3_CBC,
    CKM_DES3_ECB, CKM_SHA256_KEY_DERIVATION, CKM_CONCATENATE_BASE_AND_KEY, CKM_AES_ECB_ENCRYPT_DATA,
    CKM_AES_CBC_ENCRYPT_DATA, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, CKM_DH_PKCS_KEY_PAIR_GEN,
    CKM_DSA_KEY_PAIR_GEN, CKM_GENERIC_SECRET_KEY_GEN, CKM_PKCS5_PBKD2, 0x80000123UL, 0x9999UL,
};
#define NMECHS (sizeof MECHS / sizeof MECHS[0])

/* Words that are 0 or the address of `scratch`: any pointer field is NULL or valid,
 * any length field 0 or far above every bound. */
static void safe_words(ctx_t *c, CK_BYTE *buf, CK_ULONG len)
{
    for (CK_ULONG i = 0; i + sizeof(void *) <= len; i += sizeof(void *)) {
        void *w = chance(&c->r, 2) ? NULL : (void *)c->scratch;
        memcpy(buf + i, &w, sizeof w);
    }
}

static CK_MECHANISM_PTR mechanism(ctx_t *c)
{
    if (chance(&c->r, 25)) return NULL;
    CK_MECHANISM_PTR m = &c->mech;
    m->mechanism = MECHS[below(&c->r, NMECHS)];
    m->pParameter = NULL;
    m->ulParameterLen = 0;
    switch (below(&c->r, 8)) {
    case 0: break;  /* no parameter */
    case 1:         /* random-looking words, pointers in them NULL or valid */
        m->ulParameterLen = below(&c->r, 97);
        safe_words(c, c->param, m->ulParameterLen);
        m->pParameter = c->param;
        break;
    case 2:         /* raw bytes: only the IV-like mechanisms read them as bytes */
        m->ulParameterLen = chance(&c->r, 2) ? 16 : below(&c->r, 33);
        for (CK_ULONG i = 0; i < m->ulParameterLen; i++) c->param[i] = (CK_BYTE)next(&c->r);
        if (m->mechanism == CKM_AES_GCM || m->mechanism == CKM_RSA_PKCS_OAEP || m->mechanism == CKM_RSA_PKCS_PSS
            || m->mechanism == CKM_SHA256_RSA_PKCS_PSS || m->mechanism == CKM_ECDH1_DERIVE
            || m->mechanism == CKM_AES_CBC_ENCRYPT_DATA || m->mechanism == CKM_AES_ECB_ENCRYPT_DATA
            || m->mechanism == CKM_PKCS5_PBKD2 || m->mechanism == CKM_AES_CTR
            || m->mechanism >= 0x80000000UL || m->mechanism == 0x9999UL)
            safe_words(c, c->param, m->ulParameterLen);
        m->pParameter = c->param;
        break;
    case 3:
        m->pParameter = NULL; m->ulParameterLen = 1 + below(&c->r, 64); break;
    case 4:
        m->pParameter = c->param; m->ulParameterLen = HUGE; break;
    default: /* a well-formed parameter for the common mechanisms */
        switch (below(&c->r, 5)) {
        case 0:
            m->mechanism = CKM_AES_GCM;
            c->gcm.pIv = chance(&c->r, 6) ? NULL : c->scratch; c->gcm.ulIvLen = chance(&c->r, 6) ? HUGE : below(&c->r, 33);
            c->gcm.ulIvBits = c->gcm.ulIvLen * 8;
            c->gcm.pAAD = chance(&c->r, 2) ? NULL : c->scratch; c->gcm.ulAADLen = below(&c->r, 64);
            c->gcm.ulTagBits = chance(&c->r, 2) ? 128 : below(&c->r, 200);
            m->pParameter = &c->gcm; m->ulParameterLen = chance(&c->r, 10) ? sizeof c->gcm - 8 : sizeof c->gcm;
            break;
        case 1:
            m->mechanism = CKM_RSA_PKCS_OAEP;
            c->oaep.hashAlg = chance(&c->r, 2) ? CKM_SHA256 : CKM_SHA_1;
            c->oaep.mgf = chance(&c->r, 2) ? CKG_MGF1_SHA256 : (CK_ULONG)below(&c->r, 10);
            c->oaep.source = chance(&c->r, 2) ? CKZ_DATA_SPECIFIED : 0;
            c->oaep.pSourceData = chance(&c->r, 2) ? NULL : c->scratch; c->oaep.ulSourceDataLen = below(&c->r, 20);
            m->pParameter = &c->oaep; m->ulParameterLen = sizeof c->oaep;
            break;
        case 2:
            m->mechanism = chance(&c->r, 2) ? CKM_RSA_PKCS_PSS : CKM_SHA256_RSA_PKCS_PSS;
            c->pss.hashAlg = CKM_SHA256; c->pss.mgf = CKG_MGF1_SHA256; c->pss.sLen = below(&c->r, 300);
            m->pParameter = &c->pss; m->ulParameterLen = sizeof c->pss;
            break;
        case 3:
            m->mechanism = CKM_ECDH1_DERIVE;
            c->ecdh.kdf = chance(&c->r, 2) ? CKD_NULL : CKD_SHA256_KDF;
            c->ecdh.pSharedData = chance(&c->r, 2) ? NULL : c->scratch; c->ecdh.ulSharedDataLen = below(&c->r, 40);
            c->ecdh.pPublicData = chance(&c->r, 8) ? NULL : c->scratch; c->ecdh.ulPublicDataLen = below(&c->r, 140);
            c->scratch[0] = 0x04;
            m->pParameter = &c->ecdh; m->ulParameterLen = sizeof c->ecdh;
            break;
        default:
            m->mechanism = chance(&c->r, 2) ? CKM_AES_CBC_PAD : CKM_AES_CBC;
            m->pParameter = c->param; m->ulParameterLen = 16;
        }
    }
    return m;
}

static CK_UTF8CHAR_PTR pin(ctx_t *c, CK_ULONG *len)
{
    switch (below(&c->r, 6)) {
    case 0: *len = chance(&c->r, 2) ? 4 : 0; return NULL;
    case 1: *len = strlen(so_pin); return (CK_UTF8CHAR_PTR)so_pin;
    case 2: *len = HUGE; return (CK_UTF8CHAR_PTR)user_pin;
    case 3: *len = below(&c->r, 40); memset(c->scratch, 'x', 40); return c->scratch;
    default: *len = strlen(user_pin); return (CK_UTF8CHAR_PTR)user_pin;
    }
}

/* -- the calls ---------------------------------------------------------------------- */
#define S(r) ((CK_SESSION_HANDLE)SESSION(r))
#define P(c, p) (chance(&(c)->r, 15) ? NULL : (p))

static CK_RV do_open(ctx_t *c)
{
    CK_SESSION_HANDLE h = 0;
    CK_FLAGS flags = CKF_SERIAL_SESSION | (chance(&c->r, 3) ? 0 : CKF_RW_SESSION);
    if (chance(&c->r, 20)) flags = next(&c->r) & 0xff;
    CK_SLOT_ID slot = chance(&c->r, 8) ? below(&c->r, 5) : home;
    CK_RV rv = f->C_OpenSession(chance(&c->r, 30) ? HUGE : slot, flags, NULL, NULL, P(c, &h));
    if (rv == CKR_OK) remember(sessions, &nsessions, h, &c->r);
    return rv;
}
static CK_RV do_close(ctx_t *c) { return chance(&c->r, 4) ? f->C_CloseSession(S(&c->r)) : CKR_OK; }
static CK_RV do_close_all(ctx_t *c) { return chance(&c->r, 50) ? f->C_CloseAllSessions(below(&c->r, 4)) : CKR_OK; }
static CK_RV do_session_info(ctx_t *c) { CK_SESSION_INFO i; return f->C_GetSessionInfo(S(&c->r), P(c, &i)); }
static CK_RV do_info(ctx_t *c) { CK_INFO i; return f->C_GetInfo(P(c, &i)); }
static CK_RV do_slot_list(ctx_t *c)
{
    CK_ULONG n = below(&c->r, 5);
    return f->C_GetSlotList((CK_BBOOL)below(&c->r, 2), chance(&c->r, 2) ? NULL : (CK_SLOT_ID_PTR)c->out, P(c, &n));
}
static CK_RV do_slot_info(ctx_t *c) { CK_SLOT_INFO i; return f->C_GetSlotInfo(below(&c->r, 5), P(c, &i)); }
static CK_RV do_token_info(ctx_t *c) { CK_TOKEN_INFO i; return f->C_GetTokenInfo(below(&c->r, 5), P(c, &i)); }
static CK_RV do_mech_list(ctx_t *c)
{
    CK_ULONG n = chance(&c->r, 2) ? below(&c->r, 10) : SCRATCH / sizeof(CK_ULONG);
    return f->C_GetMechanismList(below(&c->r, 4), chance(&c->r, 3) ? NULL : (CK_MECHANISM_TYPE_PTR)c->out, P(c, &n));
}
static CK_RV do_mech_info(ctx_t *c)
{
    CK_MECHANISM_INFO i;
    return f->C_GetMechanismInfo(below(&c->r, 4), MECHS[below(&c->r, NMECHS)], P(c, &i));
}
static CK_RV do_login(ctx_t *c)
{
    CK_ULONG n; CK_UTF8CHAR_PTR p = pin(c, &n);
    CK_USER_TYPE who = chance(&c->r, 6) ? CKU_SO : chance(&c->r, 10) ? CKU_CONTEXT_SPECIFIC
                     : chance(&c->r, 20) ? 77 : CKU_USER;
    return f->C_Login(S(&c->r), who, p, n);
}
static CK_RV do_logout(ctx_t *c) { return chance(&c->r, 5) ? f->C_Logout(S(&c->r)) : CKR_OK; }
static CK_RV do_set_pin(ctx_t *c)
{
    /* a known PIN is only ever "changed" to itself, so the walk keeps knowing them */
    CK_ULONG n; CK_UTF8CHAR_PTR old = pin(c, &n);
    CK_SESSION_HANDLE s = S(&c->r);
    if (old == (CK_UTF8CHAR_PTR)user_pin || old == (CK_UTF8CHAR_PTR)so_pin)
        return f->C_SetPIN(s, old, n, old, n);
    return f->C_SetPIN(s, old, n, (CK_UTF8CHAR_PTR)"zz", 2);  /* too short: never changes */
}
static CK_RV do_init_pin(ctx_t *c)
{
    CK_ULONG n; CK_UTF8CHAR_PTR p = pin(c, &n);
    if (p && n != HUGE && p != (CK_UTF8CHAR_PTR)user_pin) n = n > 3 ? 3 : n;  /* never a new user PIN */
    return f->C_InitPIN(S(&c->r), p, n);
}
static CK_RV do_init_token(ctx_t *c)
{
    CK_UTF8CHAR label[32];
    memset(label, ' ', 32);
    CK_ULONG n; CK_UTF8CHAR_PTR p = pin(c, &n);
    CK_SLOT_ID slot = chance(&c->r, 2) ? home + 1 : below(&c->r, 5);
    if (slot == home && p && n != HUGE) n = n > 3 ? 3 : n;  /* home keeps its objects: a PIN too short */
    return f->C_InitToken(slot, p, n, P(c, label));
}

static CK_RV do_create(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &n);
    CK_OBJECT_HANDLE h = 0;
    CK_RV rv = f->C_CreateObject(S(&c->r), t, n, P(c, &h));
    if (rv == CKR_OK) remember(objects, &nobjects, h, &c->r);
    return rv;
}
static CK_RV do_copy(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &n);
    CK_OBJECT_HANDLE h = 0;
    CK_RV rv = f->C_CopyObject(S(&c->r), OBJECT(&c->r), t, n, P(c, &h));
    if (rv == CKR_OK) remember(objects, &nobjects, h, &c->r);
    return rv;
}
static CK_RV do_destroy(ctx_t *c) { return chance(&c->r, 3) ? f->C_DestroyObject(S(&c->r), OBJECT(&c->r)) : CKR_OK; }
static CK_RV do_size(ctx_t *c) { CK_ULONG n; return f->C_GetObjectSize(S(&c->r), OBJECT(&c->r), P(c, &n)); }
static CK_RV do_get(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = get_template(c, &n);
    return f->C_GetAttributeValue(S(&c->r), OBJECT(&c->r), t, n);
}
static CK_RV do_set(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &n);
    return f->C_SetAttributeValue(S(&c->r), OBJECT(&c->r), t, n);
}
static CK_RV do_find_init(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &n);
    return f->C_FindObjectsInit(S(&c->r), t, n);
}
static CK_RV do_find(ctx_t *c)
{
    CK_ULONG got = 0, max = chance(&c->r, 5) ? 0 : 1 + below(&c->r, POOL);
    CK_OBJECT_HANDLE found[POOL];
    CK_RV rv = f->C_FindObjects(S(&c->r), chance(&c->r, 15) ? NULL : found, max, P(c, &got));
    if (rv == CKR_OK) for (CK_ULONG i = 0; i < got && i < max; i++) remember(objects, &nobjects, found[i], &c->r);
    return rv;
}
static CK_RV do_find_final(ctx_t *c) { return f->C_FindObjectsFinal(S(&c->r)); }

#define INIT_FN(NAME, CALL) \
    static CK_RV do_##NAME(ctx_t *c) { return f->CALL(S(&c->r), mechanism(c), OBJECT(&c->r)); }
INIT_FN(encrypt_init, C_EncryptInit)
INIT_FN(decrypt_init, C_DecryptInit)
INIT_FN(sign_init, C_SignInit)
INIT_FN(verify_init, C_VerifyInit)
static CK_RV do_digest_init(ctx_t *c) { return f->C_DigestInit(S(&c->r), mechanism(c)); }

#define ONESHOT_FN(NAME, CALL) \
    static CK_RV do_##NAME(ctx_t *c) { \
        CK_ULONG n; CK_BYTE_PTR d = data(c, &n); CK_ULONG_PTR pl; CK_BYTE_PTR o = out(c, &pl); \
        return f->CALL(S(&c->r), d, n, o, pl); }
ONESHOT_FN(encrypt, C_Encrypt)
ONESHOT_FN(decrypt, C_Decrypt)
ONESHOT_FN(encrypt_update, C_EncryptUpdate)
ONESHOT_FN(decrypt_update, C_DecryptUpdate)
ONESHOT_FN(sign, C_Sign)
ONESHOT_FN(digest, C_Digest)

#define FINAL_FN(NAME, CALL) \
    static CK_RV do_##NAME(ctx_t *c) { CK_ULONG_PTR pl; CK_BYTE_PTR o = out(c, &pl); return f->CALL(S(&c->r), o, pl); }
FINAL_FN(encrypt_final, C_EncryptFinal)
FINAL_FN(decrypt_final, C_DecryptFinal)
FINAL_FN(sign_final, C_SignFinal)
FINAL_FN(digest_final, C_DigestFinal)

#define UPDATE_FN(NAME, CALL) \
    static CK_RV do_##NAME(ctx_t *c) { CK_ULONG n; CK_BYTE_PTR d = data(c, &n); return f->CALL(S(&c->r), d, n); }
UPDATE_FN(sign_update, C_SignUpdate)
UPDATE_FN(verify_update, C_VerifyUpdate)
UPDATE_FN(digest_update, C_DigestUpdate)
UPDATE_FN(verify_final, C_VerifyFinal)

static CK_RV do_verify(ctx_t *c)
{
    CK_ULONG n; CK_BYTE_PTR d = data(c, &n);
    CK_ULONG sl = chance(&c->r, 4) ? in_len(c, 512) : below(&c->r, 513);
    return f->C_Verify(S(&c->r), d, n, chance(&c->r, 10) ? NULL : c->out, sl);
}
static CK_RV do_digest_key(ctx_t *c) { return f->C_DigestKey(S(&c->r), OBJECT(&c->r)); }
static CK_RV do_generate_key(ctx_t *c)
{
    CK_ULONG n; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &n);
    CK_OBJECT_HANDLE h = 0;
    CK_MECHANISM_PTR m = mechanism(c);
    CK_RV rv = f->C_GenerateKey(S(&c->r), m, t, n, P(c, &h));
    if (rv == CKR_OK) remember(objects, &nobjects, h, &c->r);
    return rv;
}
static CK_RV do_generate_pair(ctx_t *c)
{
    CK_ULONG n1, n2;
    CK_ATTRIBUTE_PTR t1 = template(c, c->tmpl, c->scratch, &n1);
    CK_ATTRIBUTE_PTR t2 = template(c, c->tmpl2, c->scratch + 1024, &n2);
    CK_OBJECT_HANDLE a = 0, b = 0;
    CK_MECHANISM_PTR m = mechanism(c);
    if (m && m->mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN && !chance(&c->r, 20)) m->mechanism = CKM_EC_KEY_PAIR_GEN;
    CK_RV rv = f->C_GenerateKeyPair(S(&c->r), m, t1, n1, t2, n2, P(c, &a), P(c, &b));
    if (rv == CKR_OK) { remember(objects, &nobjects, a, &c->r); remember(objects, &nobjects, b, &c->r); }
    return rv;
}
static CK_RV do_wrap(ctx_t *c)
{
    CK_ULONG_PTR pl; CK_BYTE_PTR o = out(c, &pl);
    return f->C_WrapKey(S(&c->r), mechanism(c), OBJECT(&c->r), OBJECT(&c->r), o, pl);
}
static CK_RV do_unwrap(ctx_t *c)
{
    CK_ULONG n; CK_BYTE_PTR d = data(c, &n);
    CK_ULONG tn; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &tn);
    CK_OBJECT_HANDLE h = 0;
    CK_RV rv = f->C_UnwrapKey(S(&c->r), mechanism(c), OBJECT(&c->r), d, n, t, tn, P(c, &h));
    if (rv == CKR_OK) remember(objects, &nobjects, h, &c->r);
    return rv;
}
static CK_RV do_derive(ctx_t *c)
{
    CK_ULONG tn; CK_ATTRIBUTE_PTR t = template(c, c->tmpl, c->scratch, &tn);
    CK_OBJECT_HANDLE h = 0;
    CK_RV rv = f->C_DeriveKey(S(&c->r), mechanism(c), OBJECT(&c->r), t, tn, P(c, &h));
    if (rv == CKR_OK) remember(objects, &nobjects, h, &c->r);
    return rv;
}
static CK_RV do_random(ctx_t *c)
{
    CK_ULONG n = chance(&c->r, 10) ? 0 : below(&c->r, 4096);
    return f->C_GenerateRandom(S(&c->r), chance(&c->r, 10) ? NULL : c->out, n);
}
static CK_RV do_seed(ctx_t *c) { CK_ULONG n; CK_BYTE_PTR d = data(c, &n); return f->C_SeedRandom(S(&c->r), d, n); }
static CK_RV do_op_state(ctx_t *c)
{
    CK_ULONG_PTR pl; CK_BYTE_PTR o = out(c, &pl);
    return f->C_GetOperationState(S(&c->r), o, pl);
}
static CK_RV do_cancel(ctx_t *c) { return f->C_SessionCancel(S(&c->r), next(&c->r) & 0x7ff00); }
static CK_RV do_wait(ctx_t *c) { return f->C_WaitForSlotEvent(CKF_DONT_BLOCK, P(c, (CK_SLOT_ID_PTR)c->out), NULL); }
static CK_RV do_status(ctx_t *c) { return chance(&c->r, 2) ? f->C_GetFunctionStatus(S(&c->r)) : f->C_CancelFunction(S(&c->r)); }

/* -- what the spec allows ------------------------------------------------------------- */
/* Every function may return these (v2.40 §5.1: universal and session-handle codes).
 * CKR_GENERAL_ERROR is left out on purpose: the module gives it for its own bugs. */
#define UNIVERSAL CKR_OK, CKR_ARGUMENTS_BAD, CKR_HOST_MEMORY, CKR_FUNCTION_FAILED, CKR_CRYPTOKI_NOT_INITIALIZED, \
    CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY, CKR_DEVICE_REMOVED, CKR_FUNCTION_CANCELED
#define SESS CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED
#define SLOT CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED
#define KEYINIT CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_HANDLE_INVALID, CKR_KEY_SIZE_RANGE, \
    CKR_KEY_TYPE_INCONSISTENT, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, \
    CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN
#define NEWOBJ CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, \
    CKR_CURVE_NOT_SUPPORTED, CKR_DOMAIN_PARAMS_INVALID, CKR_PIN_EXPIRED, CKR_SESSION_READ_ONLY, \
    CKR_TEMPLATE_INCOMPLETE, CKR_TEMPLATE_INCONSISTENT, CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN
/* Beyond the spec's lists, codes the project chose (docs/decisions.md): CKR_KEY_SIZE_RANGE
 * for a key size out of range where a key is made, CKR_KEY_FUNCTION_NOT_PERMITTED for a
 * (un)wrapping key without CKA_WRAP/CKA_UNWRAP, as for every other use of a key. */
#define MADE CKR_KEY_SIZE_RANGE, CKR_KEY_FUNCTION_NOT_PERMITTED
/* PTK-C's CKR_ACCESS_DENIED: over the network, C_InitToken of the Admin Token without its
 * SO logged in on the connection (docs/network.md). */
#define CKR_ACCESS_DENIED 0x80000102UL
#define END 0xFFFFFFFFUL
#define RVS(...) (const CK_RV[]){__VA_ARGS__, END}

typedef struct { const char *name; CK_RV (*call)(ctx_t *); const CK_RV *allowed; unsigned weight; } fn_t;

static const fn_t FNS[] = {
    {"C_OpenSession", do_open, RVS(SLOT, CKR_SESSION_COUNT, CKR_SESSION_PARALLEL_NOT_SUPPORTED,
                                   CKR_SESSION_READ_WRITE_SO_EXISTS, CKR_TOKEN_WRITE_PROTECTED), 6},
    {"C_CloseSession", do_close, RVS(SESS), 4},
    {"C_CloseAllSessions", do_close_all, RVS(SLOT), 1},
    {"C_GetSessionInfo", do_session_info, RVS(SESS), 2},
    {"C_GetInfo", do_info, RVS(END), 1},
    {"C_GetSlotList", do_slot_list, RVS(CKR_BUFFER_TOO_SMALL), 1},
    {"C_GetSlotInfo", do_slot_info, RVS(SLOT), 1},
    {"C_GetTokenInfo", do_token_info, RVS(SLOT), 1},
    {"C_GetMechanismList", do_mech_list, RVS(SLOT, CKR_BUFFER_TOO_SMALL), 1},
    {"C_GetMechanismInfo", do_mech_info, RVS(SLOT, CKR_MECHANISM_INVALID), 1},
    {"C_Login", do_login, RVS(SESS, CKR_OPERATION_NOT_INITIALIZED, CKR_PIN_INCORRECT, CKR_PIN_LOCKED,
                              CKR_PIN_LEN_RANGE, CKR_SESSION_READ_ONLY_EXISTS, CKR_USER_ALREADY_LOGGED_IN,
                              CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_USER_PIN_NOT_INITIALIZED,
                              CKR_USER_TOO_MANY_TYPES, CKR_USER_TYPE_INVALID, CKR_USER_NOT_LOGGED_IN,
                              CKR_PIN_EXPIRED), 4},
    {"C_Logout", do_logout, RVS(SESS, CKR_USER_NOT_LOGGED_IN), 2},
    {"C_SetPIN", do_set_pin, RVS(SESS, CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_PIN_LOCKED,
                                 CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED, CKR_USER_PIN_NOT_INITIALIZED), 1},
    {"C_InitPIN", do_init_pin, RVS(SESS, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_SESSION_READ_ONLY,
                                   CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN), 1},
    {"C_InitToken", do_init_token, RVS(SLOT, CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_PIN_LEN_RANGE,
                                       CKR_SESSION_EXISTS, CKR_TOKEN_WRITE_PROTECTED, CKR_ACCESS_DENIED), 1},
    {"C_CreateObject", do_create, RVS(SESS, MADE, NEWOBJ), 6},
    {"C_CopyObject", do_copy, RVS(SESS, MADE, NEWOBJ, CKR_ACTION_PROHIBITED, CKR_OBJECT_HANDLE_INVALID), 3},
    {"C_DestroyObject", do_destroy, RVS(SESS, CKR_ACTION_PROHIBITED, CKR_OBJECT_HANDLE_INVALID, CKR_PIN_EXPIRED,
                                        CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN), 3},
    {"C_GetObjectSize", do_size, RVS(SESS, CKR_INFORMATION_SENSITIVE, CKR_OBJECT_HANDLE_INVALID), 2},
    {"C_GetAttributeValue", do_get, RVS(SESS, CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID,
                                        CKR_BUFFER_TOO_SMALL, CKR_OBJECT_HANDLE_INVALID), 6},
    {"C_SetAttributeValue", do_set, RVS(SESS, CKR_ACTION_PROHIBITED, CKR_ATTRIBUTE_READ_ONLY,
                                        CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID,
                                        CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_READ_ONLY, CKR_TEMPLATE_INCONSISTENT,
                                        CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN), 4},
    {"C_FindObjectsInit", do_find_init, RVS(SESS, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID,
                                            CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED), 4},
    {"C_FindObjects", do_find, RVS(SESS, CKR_OPERATION_NOT_INITIALIZED), 4},
    {"C_FindObjectsFinal", do_find_final, RVS(SESS, CKR_OPERATION_NOT_INITIALIZED), 3},
    {"C_EncryptInit", do_encrypt_init, RVS(SESS, KEYINIT), 5},
    {"C_Encrypt", do_encrypt, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE,
                                  CKR_OPERATION_NOT_INITIALIZED), 4},
    {"C_EncryptUpdate", do_encrypt_update, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE,
                                               CKR_OPERATION_NOT_INITIALIZED), 3},
    {"C_EncryptFinal", do_encrypt_final, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE,
                                             CKR_OPERATION_NOT_INITIALIZED), 2},
    {"C_DecryptInit", do_decrypt_init, RVS(SESS, KEYINIT), 5},
    {"C_Decrypt", do_decrypt, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID,
                                  CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                  CKR_USER_NOT_LOGGED_IN), 4},
    {"C_DecryptUpdate", do_decrypt_update, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID,
                                               CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                               CKR_USER_NOT_LOGGED_IN), 3},
    {"C_DecryptFinal", do_decrypt_final, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID,
                                             CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                             CKR_USER_NOT_LOGGED_IN), 2},
    {"C_DigestInit", do_digest_init, RVS(SESS, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
                                         CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN), 3},
    {"C_Digest", do_digest, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_OPERATION_NOT_INITIALIZED), 3},
    {"C_DigestUpdate", do_digest_update, RVS(SESS, CKR_OPERATION_NOT_INITIALIZED), 2},
    {"C_DigestKey", do_digest_key, RVS(SESS, CKR_KEY_HANDLE_INVALID, CKR_KEY_INDIGESTIBLE, CKR_KEY_SIZE_RANGE,
                                       CKR_OPERATION_NOT_INITIALIZED), 1},
    {"C_DigestFinal", do_digest_final, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_OPERATION_NOT_INITIALIZED), 2},
    {"C_SignInit", do_sign_init, RVS(SESS, KEYINIT), 5},
    {"C_Sign", do_sign, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE,
                            CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN, CKR_FUNCTION_REJECTED), 4},
    {"C_SignUpdate", do_sign_update, RVS(SESS, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                         CKR_USER_NOT_LOGGED_IN), 2},
    {"C_SignFinal", do_sign_final, RVS(SESS, CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE,
                                       CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN,
                                       CKR_FUNCTION_REJECTED), 2},
    {"C_VerifyInit", do_verify_init, RVS(SESS, KEYINIT), 5},
    {"C_Verify", do_verify, RVS(SESS, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE), 4},
    {"C_VerifyUpdate", do_verify_update, RVS(SESS, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED), 2},
    {"C_VerifyFinal", do_verify_final, RVS(SESS, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                                           CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE), 2},
    {"C_GenerateKey", do_generate_key, RVS(SESS, MADE, NEWOBJ, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
                                           CKR_OPERATION_ACTIVE), 4},
    {"C_GenerateKeyPair", do_generate_pair, RVS(SESS, MADE, NEWOBJ, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
                                                CKR_OPERATION_ACTIVE), 1},
    {"C_WrapKey", do_wrap, RVS(SESS, MADE, CKR_BUFFER_TOO_SMALL, CKR_KEY_HANDLE_INVALID, CKR_KEY_NOT_WRAPPABLE,
                               CKR_KEY_SIZE_RANGE, CKR_KEY_UNEXTRACTABLE, CKR_MECHANISM_INVALID,
                               CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED,
                               CKR_USER_NOT_LOGGED_IN, CKR_WRAPPING_KEY_HANDLE_INVALID,
                               CKR_WRAPPING_KEY_SIZE_RANGE, CKR_WRAPPING_KEY_TYPE_INCONSISTENT), 3},
    {"C_UnwrapKey", do_unwrap, RVS(SESS, MADE, NEWOBJ, CKR_BUFFER_TOO_SMALL, CKR_MECHANISM_INVALID,
                                   CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE,
                                   CKR_UNWRAPPING_KEY_HANDLE_INVALID, CKR_UNWRAPPING_KEY_SIZE_RANGE,
                                   CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, CKR_WRAPPED_KEY_INVALID,
                                   CKR_WRAPPED_KEY_LEN_RANGE), 3},
    {"C_DeriveKey", do_derive, RVS(SESS, MADE, NEWOBJ, CKR_KEY_HANDLE_INVALID, CKR_KEY_SIZE_RANGE,
                                   CKR_KEY_TYPE_INCONSISTENT, CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
                                   CKR_OPERATION_ACTIVE), 3},
    {"C_GenerateRandom", do_random, RVS(SESS, CKR_OPERATION_ACTIVE, CKR_RANDOM_NO_RNG, CKR_USER_NOT_LOGGED_IN), 2},
    {"C_SeedRandom", do_seed, RVS(SESS, CKR_OPERATION_ACTIVE, CKR_RANDOM_NO_RNG, CKR_RANDOM_SEED_NOT_SUPPORTED,
                                  CKR_USER_NOT_LOGGED_IN), 1},
    {"C_GetOperationState", do_op_state, RVS(SESS, CKR_FUNCTION_NOT_SUPPORTED, CKR_BUFFER_TOO_SMALL,
                                             CKR_OPERATION_NOT_INITIALIZED, CKR_STATE_UNSAVEABLE), 1},
    {"C_SessionCancel", do_cancel, RVS(SESS, CKR_OPERATION_CANCEL_FAILED), 1},
    {"C_WaitForSlotEvent", do_wait, RVS(CKR_NO_EVENT, CKR_FUNCTION_NOT_SUPPORTED), 1},
    {"C_GetFunctionStatus/C_CancelFunction", do_status, RVS(SESS, CKR_FUNCTION_NOT_PARALLEL), 1},
};
#define NFNS (sizeof FNS / sizeof FNS[0])
static unsigned weights_total;

static int allowed(const CK_RV *list, CK_RV rv)
{
    static const CK_RV universal[] = {UNIVERSAL};
    for (size_t i = 0; i < sizeof universal / sizeof universal[0]; i++) if (rv == universal[i]) return 1;
    for (; *list != END; list++) if (rv == *list) return 1;
    return 0;
}

static void report(ctx_t *c, const char *what, CK_RV rv)
{
    pthread_mutex_lock(&out_lock);
    findings++;
    printf("FINDING seed=%llu thread=%d call=%ld %s rv=0x%lx\n", seed0, c->id, c->n, what, (unsigned long)rv);
    for (int i = HISTORY; i > 0; i--) {
        long k = c->n - i;
        if (k < 0) continue;
        printf("  #%ld %s = 0x%lx\n", k, c->history[k % HISTORY], (unsigned long)c->rvs[k % HISTORY]);
    }
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void lifecycle(ctx_t *c)
{
    /* C_Finalize needs no call in flight in other threads (v2.40 §5.4): take the lock
     * exclusively, then initialise again at once. */
    pthread_rwlock_wrlock(&life);
    CK_RV rv = f->C_Finalize(NULL);
    if (rv != CKR_OK) report(c, "C_Finalize", rv);
    rv = f->C_Initialize(NULL);
    if (rv != CKR_OK) report(c, "C_Initialize", rv);
    pthread_mutex_lock(&pool_lock);
    nsessions = 0;  /* keep the stale ones? they are in the junk already: start over */
    pthread_mutex_unlock(&pool_lock);
    pthread_rwlock_unlock(&life);
}

static ctx_t **contexts;
static int nthreads;

static void *walk(void *arg)
{
    ctx_t *c = arg;
    long mine = total_calls / nthreads + (c->id < total_calls % nthreads);
    for (c->n = 0; c->n < mine && findings < 20; c->n++) {
        if (chance(&c->r, 20000)) { lifecycle(c); }
        unsigned w = below(&c->r, weights_total);
        const fn_t *fn = FNS;
        while (w >= fn->weight) { w -= fn->weight; fn++; }
        pthread_rwlock_rdlock(&life);
        c->started = time(NULL);
        CK_RV rv = fn->call(c);
        c->started = 0;
        pthread_rwlock_unlock(&life);
        c->history[c->n % HISTORY] = fn->name;
        c->rvs[c->n % HISTORY] = rv;
        if (!allowed(fn->allowed, rv)) report(c, fn->name, rv);
        __atomic_add_fetch(&calls_done, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        sleep(1);
        time_t now = time(NULL);
        for (int i = 0; i < nthreads; i++) {
            time_t t = contexts[i]->started;
            if (t && now - t > 10) {
                ctx_t *c = contexts[i];
                printf("FINDING seed=%llu thread=%d call=%ld hang: %s running for %lds\n", seed0, c->id, c->n,
                       "a call", (long)(now - t));
                fflush(stdout);
                _exit(3);
            }
        }
    }
    return NULL;
}

/* -- real objects to aim at --------------------------------------------------------- */
static void must(CK_RV rv, const char *what)
{
    if (rv != CKR_OK) { printf("setup: %s = 0x%lx\n", what, (unsigned long)rv); exit(2); }
}

static void setup(void)
{
    rng_t r = {seed0 ^ 0xabcdef};
    CK_SESSION_HANDLE s;
    must(f->C_OpenSession(home, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), "C_OpenSession");
    remember(sessions, &nsessions, s, &r);
    CK_RV rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
    if (rv != CKR_USER_ALREADY_LOGGED_IN) must(rv, "C_Login");
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY, data_class = CKO_DATA;
    CK_KEY_TYPE aes = CKK_AES, generic = CKK_GENERIC_SECRET;
    CK_ULONG len32 = 32, bits = 1024;
    CK_BYTE value[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
    CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_OBJECT_HANDLE h, h2;
    for (int token = 0; token < 2; token++) {
        CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
        CK_ATTRIBUTE aes_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                                {CKA_TOKEN, &tok, 1}, {CKA_VALUE, value, 32}, {CKA_ENCRYPT, &yes, 1},
                                {CKA_DECRYPT, &yes, 1}, {CKA_WRAP, &yes, 1}, {CKA_UNWRAP, &yes, 1},
                                {CKA_SIGN, &yes, 1}, {CKA_VERIFY, &yes, 1}, {CKA_DERIVE, &yes, 1},
                                {CKA_EXTRACTABLE, &yes, 1}, {CKA_LABEL, "fuzz-aes", 8}};
        must(f->C_CreateObject(s, aes_t, 13, &h), "AES key");
        remember(objects, &nobjects, h, &r);
        CK_ATTRIBUTE gen_t[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &generic, sizeof generic},
                                {CKA_TOKEN, &tok, 1}, {CKA_VALUE_LEN, &len32, sizeof len32}, {CKA_SIGN, &yes, 1},
                                {CKA_VERIFY, &yes, 1}, {CKA_DERIVE, &yes, 1}, {CKA_EXTRACTABLE, &yes, 1}};
        CK_MECHANISM gen = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
        must(f->C_GenerateKey(s, &gen, gen_t, 8, &h), "generic secret");
        remember(objects, &nobjects, h, &r);
        CK_ATTRIBUTE pub_t[] = {{CKA_TOKEN, &tok, 1}, {CKA_MODULUS_BITS, &bits, sizeof bits},
                                {CKA_ENCRYPT, &yes, 1}, {CKA_VERIFY, &yes, 1}, {CKA_WRAP, &yes, 1}};
        CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &tok, 1}, {CKA_DECRYPT, &yes, 1}, {CKA_SIGN, &yes, 1},
                                 {CKA_UNWRAP, &yes, 1}, {CKA_EXTRACTABLE, &yes, 1}};
        CK_MECHANISM rsa = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
        must(f->C_GenerateKeyPair(s, &rsa, pub_t, 5, priv_t, 5, &h, &h2), "RSA pair");
        remember(objects, &nobjects, h, &r); remember(objects, &nobjects, h2, &r);
        CK_ATTRIBUTE ecpub_t[] = {{CKA_TOKEN, &tok, 1}, {CKA_EC_PARAMS, p256, sizeof p256}, {CKA_VERIFY, &yes, 1}};
        CK_ATTRIBUTE ecpriv_t[] = {{CKA_TOKEN, &tok, 1}, {CKA_SIGN, &yes, 1}, {CKA_DERIVE, &yes, 1}};
        CK_MECHANISM ec = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
        must(f->C_GenerateKeyPair(s, &ec, ecpub_t, 3, ecpriv_t, 3, &h, &h2), "EC pair");
        remember(objects, &nobjects, h, &r); remember(objects, &nobjects, h2, &r);
        CK_ATTRIBUTE data_t[] = {{CKA_CLASS, &data_class, sizeof data_class}, {CKA_TOKEN, &tok, 1},
                                 {CKA_VALUE, "payload", 7}, {CKA_LABEL, "fuzz-data", 9}};
        must(f->C_CreateObject(s, data_t, 4, &h), "data object");
        remember(objects, &nobjects, h, &r);
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: fuzz MODULE SEED CALLS THREADS USER_PIN SO_PIN [SLOT]\n");
        return 2;
    }
    void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!module) { printf("dlopen: %s\n", dlerror()); return 2; }
    seed0 = strtoull(argv[2], NULL, 0);
    total_calls = atol(argv[3]);
    nthreads = atoi(argv[4]);
    user_pin = argv[5];
    so_pin = argv[6];
    home = argc == 8 ? strtoul(argv[7], NULL, 0) : 0;
    CK_C_GetInterface get = (CK_C_GetInterface)dlsym(module, "C_GetInterface");
    CK_INTERFACE_PTR iface;
    if (!get || get((CK_UTF8CHAR_PTR)"PKCS 11", NULL, &iface, 0) != CKR_OK) { printf("no PKCS 11 interface\n"); return 2; }
    f = iface->pFunctionList;
    must(f->C_Initialize(NULL), "C_Initialize");
    setup();
    for (size_t i = 0; i < NFNS; i++) weights_total += FNS[i].weight;
    contexts = calloc(nthreads, sizeof *contexts);
    pthread_t *threads = calloc(nthreads, sizeof *threads), dog;
    for (int i = 0; i < nthreads; i++) {
        contexts[i] = calloc(1, sizeof(ctx_t));
        contexts[i]->id = i;
        contexts[i]->r.s = seed0 * 1000003ULL + (uint64_t)i;
    }
    pthread_create(&dog, NULL, watchdog, NULL);
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) pthread_create(&threads[i], NULL, walk, contexts[i]);
    for (int i = 0; i < nthreads; i++) pthread_join(threads[i], NULL);
    double elapsed = now_s() - t0;
    CK_RV rv = f->C_Finalize(NULL);
    if (rv != CKR_OK) { printf("C_Finalize at the end = 0x%lx\n", (unsigned long)rv); findings++; }
    printf("calls=%ld seconds=%.1f calls_per_second=%.0f findings=%d\n", calls_done, elapsed,
           calls_done / elapsed, findings);
    free(threads);  /* the contexts stay: the watchdog reads them until the process ends */
    return findings ? 1 : 0;
}
