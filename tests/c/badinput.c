/* Walks the exported functions with bad input: NULL pointers, unknown handles,
 * wrong lengths, malformed templates, calls out of order. Every call must give
 * the code PKCS#11 v2.40/3.0 prescribes, never crash, and store nothing half-way.
 *
 *   badinput MODULE      prints "ok" and exits 0 when every expectation holds.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pkcs11_unix.h"

static CK_FUNCTION_LIST_3_0 *f;
static int failures, checks;

#define EXPECT(call, want) do { \
    CK_RV rv_ = (call); \
    checks++; \
    if (rv_ != (CK_RV)(want)) { \
        printf("FAIL line %d: %s = 0x%lx, expected 0x%lx\n", __LINE__, #call, \
               (unsigned long)rv_, (unsigned long)(want)); \
        if (++failures > 40) exit(1); \
    } \
} while (0)
#define TRUTH(cond) do { checks++; if (!(cond)) { printf("FAIL line %d: %s\n", __LINE__, #cond); failures++; } } while (0)

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static const CK_ULONG BAD = 0xDEADBEEF;
static CK_BYTE buf[4096];

static void not_initialized(void)
{
    CK_INFO info;
    CK_ULONG n = 0;
    CK_SESSION_HANDLE s;
    CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
    EXPECT(f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_GetSlotList(CK_FALSE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_DigestInit(1, &sha), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_GenerateRandom(1, buf, 4), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_CloseAllSessions(0), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, NULL, NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
    EXPECT(f->C_MessageSignInit(1, NULL, 0), CKR_CRYPTOKI_NOT_INITIALIZED);
}

static void initialize_args(void)
{
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.pReserved = &args;
    EXPECT(f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    memset(&args, 0, sizeof args);
    args.CreateMutex = (CK_CREATEMUTEX)1;  /* only one of four */
    EXPECT(f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    EXPECT(f->C_Initialize(&args), CKR_OK);
    EXPECT(f->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
}

static void slots_and_tokens(void)
{
    CK_SLOT_ID slots[8];
    CK_ULONG n = 1;
    CK_SLOT_INFO si;
    CK_TOKEN_INFO ti;
    CK_MECHANISM_TYPE mechs[2];
    CK_MECHANISM_INFO mi;
    CK_UTF8CHAR label[32];
    memset(label, ' ', 32);
    memcpy(label, "walker", 6);
    EXPECT(f->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetSlotList(CK_FALSE, NULL, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetSlotList(CK_FALSE, slots, &n), CKR_BUFFER_TOO_SMALL);
    TRUTH(n == 3);
    EXPECT(f->C_GetSlotInfo(BAD, &si), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_GetSlotInfo(0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetTokenInfo(BAD, &ti), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_GetTokenInfo(0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetTokenInfo(2, &ti), CKR_OK);
    TRUTH(ti.flags & 0x10000000UL);  /* CKF_ADMIN_TOKEN */
    TRUTH(!memcmp(ti.label, "AdminToken(", 11));
    n = 1;
    EXPECT(f->C_GetMechanismList(BAD, NULL, &n), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_GetMechanismList(0, NULL, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetMechanismList(0, mechs, &n), CKR_BUFFER_TOO_SMALL);
    TRUTH(n > 20);
    EXPECT(f->C_GetMechanismInfo(0, BAD, &mi), CKR_MECHANISM_INVALID);
    EXPECT(f->C_GetMechanismInfo(0, CKM_SHA256, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetMechanismInfo(BAD, CKM_SHA256, &mi), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_InitToken(0, (CK_UTF8CHAR_PTR)"12345678", 8, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_InitToken(0, (CK_UTF8CHAR_PTR)"12", 2, label), CKR_PIN_LEN_RANGE);
    EXPECT(f->C_InitToken(0, NULL, 8, label), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_InitToken(BAD, (CK_UTF8CHAR_PTR)"12345678", 8, label), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_InitToken(0, (CK_UTF8CHAR_PTR)"12345678", 8, label), CKR_OK);
    EXPECT(f->C_InitToken(0, (CK_UTF8CHAR_PTR)"87654321", 8, label), CKR_PIN_INCORRECT);
    EXPECT(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, NULL, NULL), CKR_NO_EVENT);
}

static CK_SESSION_HANDLE sessions(void)
{
    CK_SESSION_HANDLE ro, rw;
    CK_SESSION_INFO info;
    CK_UTF8CHAR label[32];
    memset(label, ' ', 32);
    EXPECT(f->C_OpenSession(BAD, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_OpenSession(0, 0, NULL, NULL, &ro), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    EXPECT(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
    /* an uninitialised token: read-only sessions only, nobody can log in */
    EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &ro), CKR_TOKEN_WRITE_PROTECTED);
    EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    EXPECT(f->C_Login(ro, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_PIN_NOT_INITIALIZED);
    EXPECT(f->C_Login(ro, CKU_SO, (CK_UTF8CHAR_PTR)"12345678", 8), CKR_SESSION_READ_ONLY_EXISTS);
    EXPECT(f->C_CloseSession(ro), CKR_OK);
    EXPECT(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    EXPECT(f->C_InitToken(0, (CK_UTF8CHAR_PTR)"12345678", 8, label), CKR_SESSION_EXISTS);
    EXPECT(f->C_CloseSession(BAD), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f->C_CloseAllSessions(BAD), CKR_SLOT_ID_INVALID);
    EXPECT(f->C_GetSessionInfo(BAD, &info), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f->C_GetSessionInfo(ro, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetSessionInfo(ro, &info), CKR_OK);
    TRUTH(info.state == CKS_RO_PUBLIC_SESSION);
    /* SO cannot log in while a read-only session exists */
    EXPECT(f->C_Login(ro, CKU_SO, (CK_UTF8CHAR_PTR)"12345678", 8), CKR_SESSION_READ_ONLY_EXISTS);
    EXPECT(f->C_Login(BAD, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f->C_Login(ro, 7, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_TYPE_INVALID);
    EXPECT(f->C_Login(ro, CKU_USER, NULL, 4), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_Login(ro, CKU_USER, NULL, 0), CKR_ARGUMENTS_BAD);  /* no protected authentication path */
    EXPECT(f->C_Login(ro, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_PIN_NOT_INITIALIZED);
    EXPECT(f->C_Logout(ro), CKR_USER_NOT_LOGGED_IN);
    EXPECT(f->C_InitPIN(ro, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_NOT_LOGGED_IN);
    EXPECT(f->C_SetPIN(ro, (CK_UTF8CHAR_PTR)"1234", 4, (CK_UTF8CHAR_PTR)"4321", 4), CKR_SESSION_READ_ONLY);
    EXPECT(f->C_CloseSession(ro), CKR_OK);
    EXPECT(f->C_CloseSession(ro), CKR_SESSION_HANDLE_INVALID);

    EXPECT(f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &rw), CKR_OK);
    EXPECT(f->C_Login(rw, CKU_SO, (CK_UTF8CHAR_PTR)"00000000", 8), CKR_PIN_INCORRECT);
    EXPECT(f->C_Login(rw, CKU_SO, (CK_UTF8CHAR_PTR)"12345678", 8), CKR_OK);
    EXPECT(f->C_Login(rw, CKU_SO, (CK_UTF8CHAR_PTR)"12345678", 8), CKR_USER_ALREADY_LOGGED_IN);
    EXPECT(f->C_Login(rw, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
    EXPECT(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_SESSION_READ_WRITE_SO_EXISTS);
    EXPECT(f->C_InitPIN(rw, (CK_UTF8CHAR_PTR)"1", 1), CKR_PIN_LEN_RANGE);
    EXPECT(f->C_InitPIN(rw, (CK_UTF8CHAR_PTR)"1234", 4), CKR_OK);
    EXPECT(f->C_Logout(rw), CKR_OK);
    EXPECT(f->C_Login(rw, CKU_USER, (CK_UTF8CHAR_PTR)"9999", 4), CKR_PIN_INCORRECT);
    EXPECT(f->C_Login(rw, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4), CKR_OK);
    EXPECT(f->C_GetSessionInfo(rw, &info), CKR_OK);
    TRUTH(info.state == CKS_RW_USER_FUNCTIONS);
    return rw;
}

static CK_ULONG count_objects(CK_SESSION_HANDLE s)
{
    CK_OBJECT_HANDLE found[256];
    CK_ULONG n = 0;
    EXPECT(f->C_FindObjectsInit(s, NULL, 0), CKR_OK);
    EXPECT(f->C_FindObjects(s, found, 256, &n), CKR_OK);
    EXPECT(f->C_FindObjectsFinal(s), CKR_OK);
    return n;
}

static CK_OBJECT_HANDLE objects(CK_SESSION_HANDLE s)
{
    CK_OBJECT_CLASS data = CKO_DATA, secret = CKO_SECRET_KEY;
    CK_KEY_TYPE aes = CKK_AES;
    CK_BYTE key16[16] = {0}, bool3[3] = {1, 1, 1};
    CK_ULONG before = count_objects(s), n, size;
    CK_OBJECT_HANDLE h, key;
    CK_ATTRIBUTE bad_bool[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, bool3, 3}};
    CK_ATTRIBUTE no_class[] = {{CKA_TOKEN, &yes, 1}};
    CK_ATTRIBUTE no_keytype[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_VALUE, key16, 16}};
    CK_ATTRIBUTE short_aes[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                                {CKA_VALUE, key16, 5}, {CKA_TOKEN, &yes, 1}};
    CK_ATTRIBUTE conflict[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1}, {CKA_TOKEN, &no, 1}};
    CK_ATTRIBUTE local[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                            {CKA_VALUE, key16, 16}, {CKA_LOCAL, &yes, 1}};
    CK_ATTRIBUTE foreign[] = {{CKA_CLASS, &data, sizeof data}, {CKA_MODULUS, key16, 16}};
    CK_ATTRIBUTE null_value[] = {{CKA_CLASS, &data, sizeof data}, {CKA_VALUE, NULL, 8}};
    CK_ATTRIBUTE ok_data[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1},
                              {CKA_LABEL, "walker-data", 11}, {CKA_VALUE, "hello", 5}};
    CK_ATTRIBUTE ok_key[] = {{CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes},
                             {CKA_VALUE, key16, 16}, {CKA_ENCRYPT, &no, 1}, {CKA_DECRYPT, &yes, 1},
                             {CKA_SENSITIVE, &yes, 1}};
    CK_ATTRIBUTE get[2];

    EXPECT(f->C_CreateObject(BAD, ok_data, 4, &h), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f->C_CreateObject(s, NULL, 4, &h), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_CreateObject(s, ok_data, (CK_ULONG)-1, &h), CKR_ARGUMENTS_BAD);  /* not a count */
    EXPECT(f->C_CreateObject(s, ok_data, 4, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_CreateObject(s, bad_bool, 2, &h), CKR_ATTRIBUTE_VALUE_INVALID);
    EXPECT(f->C_CreateObject(s, no_class, 1, &h), CKR_TEMPLATE_INCOMPLETE);
    EXPECT(f->C_CreateObject(s, no_keytype, 2, &h), CKR_TEMPLATE_INCOMPLETE);
    EXPECT(f->C_CreateObject(s, short_aes, 4, &h), CKR_ATTRIBUTE_VALUE_INVALID);
    EXPECT(f->C_CreateObject(s, conflict, 3, &h), CKR_TEMPLATE_INCONSISTENT);
    EXPECT(f->C_CreateObject(s, local, 4, &h), CKR_ATTRIBUTE_READ_ONLY);
    EXPECT(f->C_CreateObject(s, foreign, 2, &h), CKR_ATTRIBUTE_TYPE_INVALID);
    EXPECT(f->C_CreateObject(s, null_value, 2, &h), CKR_ATTRIBUTE_VALUE_INVALID);
    TRUTH(count_objects(s) == before);  /* nothing stored half-way */

    EXPECT(f->C_CreateObject(s, ok_data, 4, &h), CKR_OK);
    EXPECT(f->C_CreateObject(s, ok_key, 6, &key), CKR_OK);
    EXPECT(f->C_CopyObject(s, BAD, NULL, 0, &n), CKR_OBJECT_HANDLE_INVALID);
    EXPECT(f->C_CopyObject(s, h, NULL, 0, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_DestroyObject(s, BAD), CKR_OBJECT_HANDLE_INVALID);
    EXPECT(f->C_GetObjectSize(s, BAD, &size), CKR_OBJECT_HANDLE_INVALID);
    EXPECT(f->C_GetObjectSize(s, h, NULL), CKR_ARGUMENTS_BAD);

    get[0].type = CKA_LABEL; get[0].pValue = NULL; get[0].ulValueLen = 0;
    EXPECT(f->C_GetAttributeValue(s, BAD, get, 1), CKR_OBJECT_HANDLE_INVALID);
    EXPECT(f->C_GetAttributeValue(s, h, NULL, 1), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetAttributeValue(s, h, get, (CK_ULONG)-1), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GetAttributeValue(s, h, get, 1), CKR_OK);
    TRUTH(get[0].ulValueLen == 11);
    get[0].pValue = buf; get[0].ulValueLen = 4;
    EXPECT(f->C_GetAttributeValue(s, h, get, 1), CKR_BUFFER_TOO_SMALL);
    TRUTH(get[0].ulValueLen == CK_UNAVAILABLE_INFORMATION);
    get[0].ulValueLen = sizeof buf;
    get[1].type = CKA_MODULUS; get[1].pValue = buf; get[1].ulValueLen = sizeof buf;
    EXPECT(f->C_GetAttributeValue(s, h, get, 2), CKR_ATTRIBUTE_TYPE_INVALID);
    TRUTH(get[0].ulValueLen == 11 && !memcmp(buf, "walker-data", 11));
    TRUTH(get[1].ulValueLen == CK_UNAVAILABLE_INFORMATION);
    get[0].type = CKA_VALUE; get[0].pValue = buf; get[0].ulValueLen = sizeof buf;
    EXPECT(f->C_GetAttributeValue(s, key, get, 1), CKR_ATTRIBUTE_SENSITIVE);
    TRUTH(get[0].ulValueLen == CK_UNAVAILABLE_INFORMATION);

    get[0].type = CKA_CLASS; get[0].pValue = &secret; get[0].ulValueLen = sizeof secret;
    EXPECT(f->C_SetAttributeValue(s, h, get, 1), CKR_ATTRIBUTE_READ_ONLY);
    get[0].type = CKA_SENSITIVE; get[0].pValue = &no; get[0].ulValueLen = 1;
    EXPECT(f->C_SetAttributeValue(s, key, get, 1), CKR_ATTRIBUTE_READ_ONLY);
    get[0].type = CKA_LABEL; get[0].pValue = "renamed"; get[0].ulValueLen = 7;
    EXPECT(f->C_SetAttributeValue(s, h, get, 1), CKR_OK);
    EXPECT(f->C_SetAttributeValue(s, h, NULL, 1), CKR_ARGUMENTS_BAD);

    EXPECT(f->C_FindObjects(s, &n, 1, &size), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_FindObjectsFinal(s), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_FindObjectsInit(s, NULL, 0), CKR_OK);
    EXPECT(f->C_FindObjectsInit(s, NULL, 0), CKR_OPERATION_ACTIVE);
    EXPECT(f->C_FindObjects(s, NULL, 1, &size), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_FindObjectsFinal(s), CKR_OK);
    EXPECT(f->C_FindObjectsInit(s, bad_bool, 2), CKR_ATTRIBUTE_VALUE_INVALID);
    EXPECT(f->C_DestroyObject(s, h), CKR_OK);
    EXPECT(f->C_DestroyObject(s, h), CKR_OBJECT_HANDLE_INVALID);
    return key;
}

static void crypto(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE decrypt_only)
{
    CK_BYTE iv[16] = {0}, data[32] = {0}, out[64];
    CK_ULONG len;
    CK_MECHANISM cbc = {CKM_AES_CBC, iv, 16}, cbc_short = {CKM_AES_CBC, iv, 8};
    CK_MECHANISM cbc_endless = {CKM_AES_CBC, iv, (CK_ULONG)-1};
    CK_MECHANISM ecb_param = {CKM_AES_ECB, iv, 16}, rsa = {CKM_RSA_PKCS, NULL, 0};
    CK_MECHANISM unknown = {BAD, NULL, 0}, sha = {CKM_SHA256, NULL, 0};
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0}, rsagen = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_MECHANISM hmac = {CKM_SHA256_HMAC, NULL, 0};
    CK_ULONG sixteen = 16, bits = 512;
    CK_OBJECT_HANDLE key, pub, priv;
    CK_ATTRIBUTE aes_t[] = {{CKA_VALUE_LEN, &sixteen, sizeof sixteen}, {CKA_TOKEN, &yes, 1},
                            {CKA_SIGN, &no, 1}};
    CK_ATTRIBUTE no_len[] = {{CKA_TOKEN, &yes, 1}};
    CK_ATTRIBUTE rsa_small[] = {{CKA_MODULUS_BITS, &bits, sizeof bits}, {CKA_TOKEN, &yes, 1}};
    CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &yes, 1}};
    CK_ULONG before;

    EXPECT(f->C_GenerateKey(s, NULL, aes_t, 3, &key), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GenerateKey(s, &gen, aes_t, 3, NULL), CKR_ARGUMENTS_BAD);
    before = count_objects(s);
    EXPECT(f->C_GenerateKey(s, &gen, no_len, 1, &key), CKR_TEMPLATE_INCOMPLETE);
    EXPECT(f->C_GenerateKeyPair(s, &rsagen, priv_t, 1, priv_t, 1, &pub, &priv), CKR_TEMPLATE_INCOMPLETE);
    EXPECT(f->C_GenerateKeyPair(s, &rsagen, rsa_small, 2, priv_t, 1, &pub, &priv), CKR_KEY_SIZE_RANGE);
    EXPECT(f->C_GenerateKeyPair(s, &rsagen, rsa_small, 2, priv_t, 1, NULL, &priv), CKR_ARGUMENTS_BAD);
    TRUTH(count_objects(s) == before);
    EXPECT(f->C_GenerateKey(s, &gen, aes_t, 3, &key), CKR_OK);

    EXPECT(f->C_EncryptInit(s, NULL, key), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_EncryptInit(s, &unknown, key), CKR_MECHANISM_INVALID);
    EXPECT(f->C_EncryptInit(s, &cbc, BAD), CKR_KEY_HANDLE_INVALID);
    EXPECT(f->C_EncryptInit(s, &cbc_short, key), CKR_MECHANISM_PARAM_INVALID);
    EXPECT(f->C_EncryptInit(s, &cbc_endless, key), CKR_MECHANISM_PARAM_INVALID);
    EXPECT(f->C_EncryptInit(s, &ecb_param, key), CKR_MECHANISM_PARAM_INVALID);
    EXPECT(f->C_EncryptInit(s, &rsa, key), CKR_KEY_TYPE_INCONSISTENT);
    EXPECT(f->C_EncryptInit(s, &cbc, decrypt_only), CKR_KEY_FUNCTION_NOT_PERMITTED);
    EXPECT(f->C_SignInit(s, &hmac, key), CKR_KEY_TYPE_INCONSISTENT);
    EXPECT(f->C_Encrypt(s, data, 16, out, &len), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OK);
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OPERATION_ACTIVE);
    EXPECT(f->C_Encrypt(s, data, 32, NULL, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_Encrypt(s, data, 32, NULL, &len), CKR_OPERATION_NOT_INITIALIZED);  /* the failure ended it */
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OK);
    EXPECT(f->C_EncryptUpdate(s, NULL, 16, out, &len), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OK);                /* ... so a new one may start */
    EXPECT(f->C_SessionCancel(s, CKF_ENCRYPT), CKR_OK);
    EXPECT(f->C_EncryptFinal(s, out, &len), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OK);
    EXPECT(f->C_Encrypt(s, data, 32, NULL, &len), CKR_OK);       /* length query */
    TRUTH(len == 32);
    len = 8;
    EXPECT(f->C_Encrypt(s, data, 32, out, &len), CKR_BUFFER_TOO_SMALL);
    TRUTH(len == 32);
    len = sizeof out;
    EXPECT(f->C_Encrypt(s, data, 32, out, &len), CKR_OK);       /* operation still active */
    EXPECT(f->C_Encrypt(s, data, 32, out, &len), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_EncryptInit(s, &cbc, key), CKR_OK);
    len = sizeof out;
    EXPECT(f->C_Encrypt(s, data, 15, out, &len), CKR_DATA_LEN_RANGE);
    EXPECT(f->C_EncryptFinal(s, out, &len), CKR_OPERATION_NOT_INITIALIZED);  /* the error ended it */
    EXPECT(f->C_DecryptInit(s, &cbc, key), CKR_OK);
    len = sizeof out;
    EXPECT(f->C_Decrypt(s, data, 17, out, &len), CKR_ENCRYPTED_DATA_LEN_RANGE);
    EXPECT(f->C_DecryptUpdate(s, data, 16, out, &len), CKR_OPERATION_NOT_INITIALIZED);

    EXPECT(f->C_DigestInit(s, NULL), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_Digest(s, data, 4, out, &len), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_DigestInit(s, &sha), CKR_OK);
    EXPECT(f->C_DigestInit(s, &sha), CKR_OPERATION_ACTIVE);
    EXPECT(f->C_DigestUpdate(s, NULL, 4), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_DigestUpdate(s, data, 4), CKR_OPERATION_NOT_INITIALIZED);  /* the failure ended it */
    EXPECT(f->C_DigestInit(s, &sha), CKR_OK);
    EXPECT(f->C_DigestUpdate(s, data, (CK_ULONG)-1), CKR_ARGUMENTS_BAD);  /* not a length */
    EXPECT(f->C_DigestInit(s, &sha), CKR_OK);
    EXPECT(f->C_DigestKey(s, BAD), CKR_KEY_HANDLE_INVALID);
    EXPECT(f->C_DigestInit(s, &sha), CKR_OK);
    len = 31;
    EXPECT(f->C_DigestFinal(s, out, &len), CKR_BUFFER_TOO_SMALL);
    TRUTH(len == 32);
    EXPECT(f->C_DigestFinal(s, out, &len), CKR_OK);

    EXPECT(f->C_VerifyFinal(s, out, 4), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_SignUpdate(s, data, 4), CKR_OPERATION_NOT_INITIALIZED);
    EXPECT(f->C_WrapKey(s, &cbc, BAD, key, out, &len), CKR_WRAPPING_KEY_HANDLE_INVALID);
    EXPECT(f->C_UnwrapKey(s, &cbc, BAD, data, 16, aes_t, 1, &priv), CKR_UNWRAPPING_KEY_HANDLE_INVALID);
    EXPECT(f->C_DeriveKey(s, &cbc, BAD, aes_t, 1, &priv), CKR_KEY_HANDLE_INVALID);
    EXPECT(f->C_SeedRandom(s, data, 4), CKR_OK);
    EXPECT(f->C_SeedRandom(s, NULL, 4), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GenerateRandom(s, NULL, 4), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GenerateRandom(s, out, (CK_ULONG)-1), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_GenerateRandom(BAD, out, 4), CKR_SESSION_HANDLE_INVALID);
    EXPECT(f->C_GenerateRandom(s, out, 0), CKR_OK);
    EXPECT(f->C_GenerateRandom(s, NULL, 0), CKR_OK);  /* zero bytes asked, zero given (p11-kit's RPC sends NULL) */
    EXPECT(f->C_GetFunctionStatus(s), CKR_FUNCTION_NOT_PARALLEL);
    EXPECT(f->C_CancelFunction(s), CKR_FUNCTION_NOT_PARALLEL);
    EXPECT(f->C_GetOperationState(s, NULL, &len), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT(f->C_SignRecoverInit(s, &rsa, key), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT(f->C_DigestEncryptUpdate(s, data, 4, out, &len), CKR_FUNCTION_NOT_SUPPORTED);
    EXPECT(f->C_SessionCancel(s, CKF_FIND_OBJECTS), CKR_OK);
}

int main(int argc, char **argv)
{
    void *handle;
    CK_C_GetInterface get;
    CK_INTERFACE_PTR iface;
    CK_SESSION_HANDLE s;
    if (argc != 2)
        return 2;
    handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!handle) { printf("FAIL dlopen %s\n", dlerror()); return 2; }
    get = (CK_C_GetInterface)dlsym(handle, "C_GetInterface");
    if (!get || get(NULL, NULL, &iface, 0) != CKR_OK) { printf("FAIL C_GetInterface\n"); return 2; }
    f = (CK_FUNCTION_LIST_3_0 *)iface->pFunctionList;

    not_initialized();
    initialize_args();
    slots_and_tokens();
    s = sessions();
    crypto(s, objects(s));
    EXPECT(f->C_Finalize(&s), CKR_ARGUMENTS_BAD);
    EXPECT(f->C_Finalize(NULL), CKR_OK);
    EXPECT(f->C_CloseSession(s), CKR_CRYPTOKI_NOT_INITIALIZED);
    if (failures) {
        printf("%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("%d checks ok\n", checks);
    return 0;
}
