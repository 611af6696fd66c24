/* The C half of libptkhsm.so: everything that must work before, or without,
 * the embedded Python. cffi's generated code has included Python.h already. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <pthread.h>
#include <string.h>
#include <wchar.h>
#include <stdlib.h>

#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) \
    __attribute__((visibility("default"))) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (* name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (* name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"

/* Set by the init code as its last step. If the init code raised, cffi makes
 * every extern "Python" function return 0 (CKR_OK): the wrappers check this
 * flag so such a failure is CKR_GENERAL_ERROR, never a false CKR_OK. */
static volatile int ptkhsm_ready = 0;
static int ptkhsm_broken = 0;  /* the interpreter cannot start here: never enter it */

void ptkhsm_mark_ready(void) { ptkhsm_ready = 1; }

/* Set in a child after fork(): until it calls C_Initialize, every call is
 * CKR_CRYPTOKI_NOT_INITIALIZED, answered here without entering Python (and
 * without a getpid() on every call). */
static volatile int ptkhsm_forked = 0;

/* The gate: one C thread at a time runs Python. Threads that would fight
 * over the GIL on every short call (a hand-off per call-in, call-out and
 * every short OpenSSL call that releases it) sleep on this mutex instead,
 * and the thread inside keeps the GIL uncontended. A call that will spend
 * long outside the GIL (RSA, key generation, a PIN's KDF, a disk write, a
 * network round trip) opens the gate early through ptkhsm.gate, so long
 * operations still run side by side. A thread that already holds the GIL
 * (a Python host calling without releasing it) never waits here: waiting
 * for the gate while holding the GIL would deadlock with the thread inside. */
static pthread_mutex_t ptkhsm_gate = PTHREAD_MUTEX_INITIALIZER;
static __thread int ptkhsm_inside;

static void ptkhsm_gate_enter(void)
{
    if (Py_IsInitialized() && PyGILState_Check())
        return;
    pthread_mutex_lock(&ptkhsm_gate);
    ptkhsm_inside = 1;
}

void ptkhsm_let_others_in(void)
{
    if (ptkhsm_inside) {
        ptkhsm_inside = 0;
        pthread_mutex_unlock(&ptkhsm_gate);
    }
}

static void ptkhsm_on_fork_child(void)
{
    ptkhsm_forked = 1;
    /* the child has only the forking thread: whoever held the gate is gone */
    pthread_mutex_init(&ptkhsm_gate, NULL);
    ptkhsm_inside = 0;
}
int ptkhsm_fork_pending(void) { return ptkhsm_forked; }
void ptkhsm_fork_handled(void) { ptkhsm_forked = 0; }
const char *ptkhsm_shim_version(void) { return PTKHSM_VERSION; }
const char *ptkhsm_shim_sitedirs(void) { return PTKHSM_SITEDIRS; }

const char *ptkhsm_shim_path(void)
{
    Dl_info info;
    if (dladdr((void *)&ptkhsm_shim_path, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}

/* Runs at dlopen. A host that loaded us RTLD_LOCAL would leave libpython's
 * symbols invisible to Python's own extension modules: promote it to global.
 * A host without Python gets the home and module path of the Python we were
 * built with, or the interpreter would take its stdlib from wherever the host
 * binary lives. */
__attribute__((constructor)) static void ptkhsm_on_load(void)
{
    static wchar_t home[4096], path[16384];
    dlopen(PTKHSM_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    pthread_atfork(NULL, NULL, ptkhsm_on_fork_child);
    if (!Py_IsInitialized()) {
        /* Python aborts the whole process when it cannot find its standard
         * library (e.g. a user who may not read the build's Python): refuse
         * here instead, with a reason, and answer CKR_GENERAL_ERROR. */
        if (access(PTKHSM_STDLIB "/encodings/__init__.py", R_OK) != 0) {
            fprintf(stderr, "ptkhsm: cannot read the Python standard library in %s: %s\n",
                    PTKHSM_STDLIB, strerror(errno));
            ptkhsm_broken = 1;
            return;
        }
        /* The directories we were installed into come first, before the base
         * Python's site-packages (which `site` appends): cffi's own backend and
         * the pinned cryptography must be ours, not whatever the base has. */
        if (mbstowcs(home, PTKHSM_PYTHONHOME, 4095) != (size_t)-1)
            Py_SetPythonHome(home);
        if (mbstowcs(path, PTKHSM_SEARCHPATH, 16383) != (size_t)-1)
            Py_SetPath(path);
    }
}

#define CK_PKCS11_FUNCTION_INFO(name) name,

#define CK_PKCS11_2_0_ONLY 1
static CK_FUNCTION_LIST ptkhsm_list_2_40 = {
    {2, 40},
#include "pkcs11f.h"
};
#undef CK_PKCS11_2_0_ONLY

#define CK_PKCS11_3_0_ONLY 1
static CK_FUNCTION_LIST_3_0 ptkhsm_list_3_0 = {
    {3, 0},
#include "pkcs11f.h"
};
#undef CK_PKCS11_3_0_ONLY
#undef CK_PKCS11_FUNCTION_INFO

static CK_INTERFACE ptkhsm_interfaces[] = {
    {(CK_UTF8CHAR_PTR)"PKCS 11", &ptkhsm_list_3_0, 0},
    {(CK_UTF8CHAR_PTR)"PKCS 11", &ptkhsm_list_2_40, 0},
};
#define PTKHSM_INTERFACES (sizeof ptkhsm_interfaces / sizeof ptkhsm_interfaces[0])

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
    if (!ppFunctionList)
        return CKR_ARGUMENTS_BAD;
    *ppFunctionList = &ptkhsm_list_2_40;
    return CKR_OK;
}

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
    if (!pulCount)
        return CKR_ARGUMENTS_BAD;
    if (!pInterfacesList) {
        *pulCount = PTKHSM_INTERFACES;
        return CKR_OK;
    }
    if (*pulCount < PTKHSM_INTERFACES) {
        *pulCount = PTKHSM_INTERFACES;
        return CKR_BUFFER_TOO_SMALL;
    }
    memcpy(pInterfacesList, ptkhsm_interfaces, sizeof ptkhsm_interfaces);
    *pulCount = PTKHSM_INTERFACES;
    return CKR_OK;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
    size_t i;
    if (!ppInterface)
        return CKR_ARGUMENTS_BAD;
    for (i = 0; i < PTKHSM_INTERFACES; i++) {
        CK_INTERFACE *candidate = &ptkhsm_interfaces[i];
        CK_VERSION *version = (CK_VERSION *)candidate->pFunctionList;
        if (pInterfaceName && strcmp((const char *)pInterfaceName, (const char *)candidate->pInterfaceName))
            continue;
        if (pVersion && (pVersion->major != version->major || pVersion->minor != version->minor))
            continue;
        if ((candidate->flags & flags) != flags)
            continue;
        *ppInterface = candidate;
        return CKR_OK;
    }
    return CKR_ARGUMENTS_BAD;
}
