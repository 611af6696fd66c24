/*
 * example.c - sign and verify with a key in a PKCS#11 token, in plain C.
 *
 *   gcc -Wall -I <directory of pkcs11.h> -o example example.c -ldl
 *   ./example <module.so> <token label> <user PIN> <key label>
 *
 * The steps every PKCS#11 application takes: dlopen the module, get its
 * function list, C_Initialize, find the slot of the token by its label, open
 * a session, log in, find the key pair by CKA_LABEL, sign, verify, and clean
 * up. RSA keys sign with CKM_SHA256_RSA_PKCS; EC keys hash with C_Digest
 * (CKM_SHA256) and sign the hash with CKM_ECDSA, which every module has.
 * The OASIS headers (pkcs11.h, pkcs11t.h, pkcs11f.h) need the platform
 * macros below; ptkhsm ships them in shim/include.
 *
 * Prints "ok: ..." and exits 0 on success; otherwise names the failing call
 * and its CKR, and exits 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11_unix.h"  /* shim/include: pkcs11.h with its platform macros */

/* Call a PKCS#11 function; on an error print it and leave through `done`. */
#define CALL(fn, ...) do { \
        CK_RV rv_ = p11->fn(__VA_ARGS__); \
        if (rv_ != CKR_OK) { \
            fprintf(stderr, "%s failed: CKR 0x%lx\n", #fn, (unsigned long)rv_); \
            goto done; \
        } \
    } while (0)

static CK_FUNCTION_LIST_PTR p11;

/* The first object of `class` whose CKA_LABEL is `label`, or CK_INVALID_HANDLE. */
static CK_OBJECT_HANDLE find_by_label(CK_SESSION_HANDLE session, CK_OBJECT_CLASS class, const char *label)
{
    CK_ATTRIBUTE template[] = {
        {CKA_CLASS, &class, sizeof class},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
    CK_ULONG count = 0;

    if (p11->C_FindObjectsInit(session, template, 2) != CKR_OK)
        return CK_INVALID_HANDLE;
    if (p11->C_FindObjects(session, &object, 1, &count) != CKR_OK || count == 0)
        object = CK_INVALID_HANDLE;
    p11->C_FindObjectsFinal(session);
    return object;
}

/* The slot whose token label (32 bytes, space padded) is `label`. */
static int find_slot(const char *label, CK_SLOT_ID *slot)
{
    CK_SLOT_ID slots[64];
    CK_ULONG count = 64, i;
    char padded[32];

    if (strlen(label) > sizeof padded)
        return 0;
    memset(padded, ' ', sizeof padded);
    memcpy(padded, label, strlen(label));
    if (p11->C_GetSlotList(CK_TRUE, slots, &count) != CKR_OK)
        return 0;
    for (i = 0; i < count; i++) {
        CK_TOKEN_INFO info;
        if (p11->C_GetTokenInfo(slots[i], &info) == CKR_OK && memcmp(info.label, padded, 32) == 0) {
            *slot = slots[i];
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *module_path, *token_label, *pin, *key_label;
    void *module;
    CK_C_GetFunctionList get_function_list;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE private_key, public_key;
    CK_KEY_TYPE key_type;
    CK_ATTRIBUTE type_attribute = {CKA_KEY_TYPE, &key_type, sizeof key_type};
    CK_MECHANISM mechanism = {CKM_SHA256_RSA_PKCS, NULL_PTR, 0};
    CK_MECHANISM sha256 = {CKM_SHA256, NULL_PTR, 0};
    CK_BYTE message[] = "a message signed inside the token";
    CK_BYTE digest[32], *to_sign = message;
    CK_ULONG digest_len = sizeof digest, to_sign_len = sizeof message - 1;
    CK_BYTE signature[1024];
    CK_ULONG signature_len = sizeof signature;
    int initialized = 0, logged_in = 0, status = 1;

    if (argc != 5) {
        fprintf(stderr, "usage: %s <module.so> <token label> <user PIN> <key label>\n", argv[0]);
        return 2;
    }
    module_path = argv[1];
    token_label = argv[2];
    pin = argv[3];
    key_label = argv[4];

    /* 1. Load the module and get its function list. */
    module = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    get_function_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
    if (!get_function_list || get_function_list(&p11) != CKR_OK) {
        fprintf(stderr, "%s has no usable C_GetFunctionList\n", module_path);
        dlclose(module);
        return 1;
    }

    /* 2. Initialise; NULL arguments: the application makes no threads of its own here. */
    CALL(C_Initialize, NULL_PTR);
    initialized = 1;

    /* 3. Find the token, open a session and log in as the user. */
    if (!find_slot(token_label, &slot)) {
        fprintf(stderr, "no token labelled \"%s\"\n", token_label);
        goto done;
    }
    CALL(C_OpenSession, slot, CKF_SERIAL_SESSION, NULL_PTR, NULL_PTR, &session);
    CALL(C_Login, session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    logged_in = 1;

    /* 4. Find the key pair by its label. */
    private_key = find_by_label(session, CKO_PRIVATE_KEY, key_label);
    public_key = find_by_label(session, CKO_PUBLIC_KEY, key_label);
    if (private_key == CK_INVALID_HANDLE || public_key == CK_INVALID_HANDLE) {
        fprintf(stderr, "no key pair labelled \"%s\"\n", key_label);
        goto done;
    }
    CALL(C_GetAttributeValue, session, private_key, &type_attribute, 1);
    if (key_type == CKK_EC) {
        CALL(C_DigestInit, session, &sha256);
        CALL(C_Digest, session, message, sizeof message - 1, digest, &digest_len);
        mechanism.mechanism = CKM_ECDSA;
        to_sign = digest;
        to_sign_len = digest_len;
    } else if (key_type != CKK_RSA) {
        fprintf(stderr, "key type 0x%lx: this example signs with RSA or EC keys\n", (unsigned long)key_type);
        goto done;
    }

    /* 5. Sign with the private key ... */
    CALL(C_SignInit, session, &mechanism, private_key);
    CALL(C_Sign, session, to_sign, to_sign_len, signature, &signature_len);

    /* 6. ... and verify with the public key; a changed message must not verify. */
    CALL(C_VerifyInit, session, &mechanism, public_key);
    CALL(C_Verify, session, to_sign, to_sign_len, signature, signature_len);
    to_sign[0] ^= 1;
    if (p11->C_VerifyInit(session, &mechanism, public_key) != CKR_OK ||
        p11->C_Verify(session, to_sign, to_sign_len, signature, signature_len) != CKR_SIGNATURE_INVALID) {
        fprintf(stderr, "a changed message was not rejected with CKR_SIGNATURE_INVALID\n");
        goto done;
    }
    printf("ok: %s signature of %lu bytes made and verified with \"%s\"\n",
           key_type == CKK_EC ? "ECDSA" : "SHA256-RSA-PKCS", (unsigned long)signature_len, key_label);
    status = 0;

done:
    /* 7. Clean up in reverse order. */
    if (logged_in)
        p11->C_Logout(session);
    if (session != CK_INVALID_HANDLE)
        p11->C_CloseSession(session);
    if (initialized)
        p11->C_Finalize(NULL_PTR);
    dlclose(module);
    return status;
}
