/*
 * functions.c - is an optional PKCS#11 function implemented? Prints what it returns.
 *
 *   gcc -Wall -I <directory of pkcs11.h> -o functions functions.c -ldl
 *   ./functions <module.so> <token label> <user PIN> <function>
 *
 * Calls <function> on a logged-in session, with arguments that an
 * implementation can answer without doing work (no operation active, an
 * invalid key handle, a zero-length state, CKF_DONT_BLOCK), and prints
 * "<function> 0x<CKR>". A function that is not implemented returns
 * CKR_FUNCTION_NOT_SUPPORTED (0x54). Functions of PKCS #11 3.0 are reached
 * through C_GetInterface("PKCS 11", 3.0); a 2.40 module prints
 * "<function> no-3.0-interface". Exit status 0 unless the set-up failed.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "pkcs11_unix.h"  /* shim/include: pkcs11.h with its platform macros */
#include "find_slot.h"

int main(int argc, char **argv)
{
    CK_FUNCTION_LIST_PTR p11;
    CK_FUNCTION_LIST_3_0_PTR p30 = NULL;
    CK_C_GetFunctionList get_function_list;
    CK_C_GetInterface get_interface;
    CK_INTERFACE_PTR interface = NULL;
    CK_VERSION v30 = {3, 0};
    CK_SLOT_ID slot = 0;
    CK_ULONG len = 0;
    CK_SESSION_HANDLE session;
    CK_MECHANISM rsa = {CKM_RSA_PKCS, NULL_PTR, 0};
    CK_MECHANISM gcm = {CKM_AES_GCM, NULL_PTR, 0};
    CK_BYTE in[16] = {0}, out[512];
    CK_ULONG out_len = sizeof out;
    const char *name;
    void *module;
    CK_RV rv;

    if (argc != 5) {
        fprintf(stderr, "usage: %s <module.so> <token label> <user PIN> <function>\n", argv[0]);
        return 2;
    }
    name = argv[4];
    module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!module || !(get_function_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList")) ||
        get_function_list(&p11) != CKR_OK || p11->C_Initialize(NULL_PTR) != CKR_OK) {
        fprintf(stderr, "cannot load and initialise %s\n", argv[1]);
        return 1;
    }
    get_interface = (CK_C_GetInterface)dlsym(module, "C_GetInterface");
    if (get_interface && get_interface((CK_UTF8CHAR_PTR)"PKCS 11", &v30, &interface, 0) == CKR_OK)
        p30 = (CK_FUNCTION_LIST_3_0_PTR)interface->pFunctionList;

    if (!find_slot(p11, argv[2], &slot) || p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL_PTR, NULL_PTR,
                                     &session) != CKR_OK) {
        fprintf(stderr, "no session on the token %s\n", argv[2]);
        return 1;
    }
    if (strcmp(name, "C_LoginUser") != 0 &&
        p11->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)argv[3], strlen(argv[3])) != CKR_OK) {
        fprintf(stderr, "C_Login failed\n");
        return 1;
    }

#define IS(fn) (strcmp(name, fn) == 0)
#define NEEDS_30 do { if (!p30) { printf("%s no-3.0-interface\n", name); return 0; } } while (0)
    if (IS("C_GetOperationState"))
        rv = p11->C_GetOperationState(session, NULL_PTR, &len);
    else if (IS("C_SetOperationState"))
        rv = p11->C_SetOperationState(session, in, 0, CK_INVALID_HANDLE, CK_INVALID_HANDLE);
    else if (IS("C_SignRecoverInit"))
        rv = p11->C_SignRecoverInit(session, &rsa, CK_INVALID_HANDLE);
    else if (IS("C_SignRecover"))
        rv = p11->C_SignRecover(session, in, sizeof in, out, &out_len);
    else if (IS("C_VerifyRecoverInit"))
        rv = p11->C_VerifyRecoverInit(session, &rsa, CK_INVALID_HANDLE);
    else if (IS("C_VerifyRecover"))
        rv = p11->C_VerifyRecover(session, in, sizeof in, out, &out_len);
    else if (IS("C_DigestEncryptUpdate"))
        rv = p11->C_DigestEncryptUpdate(session, in, sizeof in, out, &out_len);
    else if (IS("C_DecryptDigestUpdate"))
        rv = p11->C_DecryptDigestUpdate(session, in, sizeof in, out, &out_len);
    else if (IS("C_SignEncryptUpdate"))
        rv = p11->C_SignEncryptUpdate(session, in, sizeof in, out, &out_len);
    else if (IS("C_DecryptVerifyUpdate"))
        rv = p11->C_DecryptVerifyUpdate(session, in, sizeof in, out, &out_len);
    else if (IS("C_WaitForSlotEvent"))
        rv = p11->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, NULL_PTR);
    else if (IS("C_GetFunctionStatus"))
        rv = p11->C_GetFunctionStatus(session);
    else if (IS("C_CancelFunction"))
        rv = p11->C_CancelFunction(session);
    else if (IS("C_LoginUser")) {
        NEEDS_30;
        rv = p30->C_LoginUser(session, CKU_USER, (CK_UTF8CHAR_PTR)argv[3], strlen(argv[3]),
                              (CK_UTF8CHAR_PTR)"user", 4);
    } else if (IS("C_SessionCancel")) {
        NEEDS_30;
        rv = p30->C_SessionCancel(session, CKF_SIGN);
    } else if (IS("C_MessageEncryptInit")) {
        NEEDS_30;
        rv = p30->C_MessageEncryptInit(session, &gcm, CK_INVALID_HANDLE);
    } else if (IS("C_MessageDecryptInit")) {
        NEEDS_30;
        rv = p30->C_MessageDecryptInit(session, &gcm, CK_INVALID_HANDLE);
    } else if (IS("C_MessageSignInit")) {
        NEEDS_30;
        rv = p30->C_MessageSignInit(session, &rsa, CK_INVALID_HANDLE);
    } else if (IS("C_MessageVerifyInit")) {
        NEEDS_30;
        rv = p30->C_MessageVerifyInit(session, &rsa, CK_INVALID_HANDLE);
    } else {
        fprintf(stderr, "unknown function %s\n", name);
        return 2;
    }
    printf("%s 0x%lx\n", name, (unsigned long)rv);
    p11->C_CloseSession(session);
    p11->C_Finalize(NULL_PTR);
    return 0;
}
