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
#include <strings.h>
#include <libgen.h>

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

void ptkhsm_mark_ready(void) { ptkhsm_ready = 1; }

/* Set in a child after fork(): until it calls C_Initialize, every call is
 * CKR_CRYPTOKI_NOT_INITIALIZED, answered here without entering Python (and
 * without a getpid() on every call). */
static volatile int ptkhsm_forked = 0;

/* The gate: one C thread at a time runs Python. Threads that would fight
 * over the GIL on every short call (a hand-off per call-in, call-out and
 * every short OpenSSL call that releases it) wait at the gate instead (shim/gate.h),
 * and the thread inside keeps the GIL uncontended. A call that will spend
 * long outside the GIL (RSA, key generation, a PIN's KDF, a disk write, a
 * network round trip) opens the gate early through ptkhsm.gate, so long
 * operations still run side by side. A thread that already holds the GIL
 * (a Python host calling without releasing it) never waits here: waiting
 * for the gate while holding the GIL would deadlock with the thread inside. */
#include "gate.h"
#include "share.h"
static __thread int ptkhsm_inside;  /* this thread holds the gate */
static __thread int ptkhsm_depth;   /* calls of this thread under way in the module */

static void ptkhsm_gate_enter(void)
{
    /* A call made from inside another of the same thread (a Python host's garbage
     * collector finishing an abandoned operation mid-call) is already inside. */
    if (ptkhsm_depth++ > 0)
        return;
    if (Py_IsInitialized() && PyGILState_Check())
        return;
    gate_lock();
    ptkhsm_inside = 1;
}

void ptkhsm_let_others_in(void)
{
    if (ptkhsm_inside) {
        ptkhsm_inside = 0;
        gate_unlock();
    }
}

/* Before a brief computation outside the GIL (shim/share.h says when it opens). */
void ptkhsm_share_cores(void)
{
    if (ptkhsm_inside && share_take_core())
        ptkhsm_let_others_in();
}

/* C_GetAttributeValue's rule for one value (PKCS#11 v3.0 §5.2, "C_GetAttributeValue"):
 * the length only if the caller gave no buffer, CK_UNAVAILABLE_INFORMATION and
 * CKR_BUFFER_TOO_SMALL if its buffer is too short, else the copy. ptkhsm/abi/marshal.py
 * applies it through this function to every value but a template's (CKA_WRAP_TEMPLATE,
 * whose array it fills in Python): through cffi, its four field accesses and the copy
 * cost more than the engine's whole lookup of the value. */
CK_RV ptkhsm_value_out(CK_ATTRIBUTE_PTR template, CK_ULONG index, const char *value, CK_ULONG length)
{
    CK_ATTRIBUTE_PTR attribute = template + index;
    if (attribute->pValue == NULL_PTR) {
        attribute->ulValueLen = length;
        return CKR_OK;
    }
    if (attribute->ulValueLen < length) {
        attribute->ulValueLen = CK_UNAVAILABLE_INFORMATION;
        return CKR_BUFFER_TOO_SMALL;
    }
    memcpy(attribute->pValue, value, length);
    attribute->ulValueLen = length;
    return CKR_OK;
}

static void ptkhsm_gate_leave(void)
{
    if (--ptkhsm_depth == 0) {
        ptkhsm_let_others_in();
        share_give_core();
    }
}

static void ptkhsm_on_fork_child(void)
{
    ptkhsm_forked = 1;
    /* the child has only the forking thread: whoever held the gate is gone */
    gate_reset();
    share_reset();
    ptkhsm_inside = 0;
    ptkhsm_depth = 0;
}
int ptkhsm_fork_pending(void) { return ptkhsm_forked; }
void ptkhsm_fork_handled(void) { ptkhsm_forked = 0; }
const char *ptkhsm_shim_version(void) { return PTKHSM_VERSION; }

const char *ptkhsm_shim_path(void)
{
    Dl_info info;
    if (dladdr((void *)&ptkhsm_shim_path, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}

/* Where the calls go, chosen once, at the first call that needs the HSM
 * (docs/hosts.md): into Python in this process, to a separate process
 * through p11-kit's RPC, or nowhere (CKR_GENERAL_ERROR, the reason printed). */
enum { PTKHSM_ROUTE_PYTHON, PTKHSM_ROUTE_REMOTE, PTKHSM_ROUTE_BROKEN };
static int ptkhsm_route_taken = PTKHSM_ROUTE_BROKEN;
static pthread_once_t ptkhsm_route_once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST_PTR ptkhsm_remote;      /* p11-kit-client's list */
static char ptkhsm_package[4096];               /* the ptkhsm package the init code loads */
/* Another Python's version when its symbols are the ones this library binds
 * to (a host of another version): then no Python function may be called. */
static char ptkhsm_foreign_python[32];

const char *ptkhsm_shim_package(void) { return ptkhsm_package; }

static void ptkhsm_report(const char *reason)
{
    fprintf(stderr, "ptkhsm: %s\n", reason);
}

/* ET_PTKC_HSM_PROCESS, resolved in the order of ptkhsm/config.py (environment >
 * user file > system file > default), here because it decides whether
 * Python may start at all. */
static int ptkhsm_file_value(const char *path, const char *name, char *out, size_t size)
{
    char line[1024];
    size_t n = strlen(name);
    int found = 0;
    FILE *file = fopen(path, "r");
    if (!file)
        return 0;
    while (fgets(line, sizeof line, file)) {
        char *p = line, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, name, n))
            continue;
        p += n;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p++ != '=')
            continue;
        while (*p == ' ' || *p == '\t' || *p == '"')
            p++;
        end = p + strcspn(p, "\"\r\n");
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        snprintf(out, size, "%.*s", (int)(end - p), p);
        found = 1;
    }
    fclose(file);
    return found;
}

static const char *ptkhsm_process_mode(char *reason, size_t size)
{
    static const char *const modes[] = {"auto", "in-process", "separate", NULL};
    static char value[64];
    char user[4096];
    const char *env = getenv("ET_PTKC_HSM_PROCESS"), *home = getenv("HOME");
    int i;
    if (env)
        snprintf(value, sizeof value, "%s", env);
    else if (!(home && snprintf(user, sizeof user, "%s/.config/safenet/et_ptkc", home) > 0
               && ptkhsm_file_value(user, "ET_PTKC_HSM_PROCESS", value, sizeof value))
             && !ptkhsm_file_value("/etc/default/et_ptkc", "ET_PTKC_HSM_PROCESS", value, sizeof value))
        return "auto";
    for (i = 0; modes[i]; i++)
        if (!strcmp(value, modes[i]))
            return modes[i];
    snprintf(reason, size, "ET_PTKC_HSM_PROCESS='%s': not one of auto, in-process, separate", value);
    return NULL;
}

/* A C host: start the Python the library was built with, isolated from the
 * environment's PYTHON* variables and from the base Python's site-packages,
 * with the directories ptkhsm was installed into. PyConfig returns an error
 * instead of exiting, but a missing standard library still aborts in some
 * versions: check that first. */
static int ptkhsm_start_python(char *reason, size_t size)
{
    PyConfig config;
    PyStatus status;
    char paths[] = PTKHSM_SEARCHPATH, *path, *save = NULL;
    if (Py_IsInitialized())
        return 1;
    if (access(PTKHSM_STDLIB "/encodings/__init__.py", R_OK) != 0) {
        snprintf(reason, size, "cannot read the Python standard library in %s: %s",
                 PTKHSM_STDLIB, strerror(errno));
        return 0;
    }
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    status = PyConfig_SetBytesString(&config, &config.home, PTKHSM_PYTHONHOME);
    config.module_search_paths_set = 1;
    for (path = strtok_r(paths, ":", &save); path && !PyStatus_Exception(status);
         path = strtok_r(NULL, ":", &save)) {
        wchar_t *wide = Py_DecodeLocale(path, NULL);
        if (!wide)
            break;
        status = PyWideStringList_Append(&config.module_search_paths, wide);
        PyMem_RawFree(wide);
    }
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        snprintf(reason, size, "cannot start Python %s: %s", PTKHSM_PYTHONHOME,
                 status.err_msg ? status.err_msg : "unknown error");
        return 0;
    }
    PyEval_SaveThread();  /* cffi takes the GIL when it needs it */
    return 1;
}

/* shim/preflight.py in the (host's or our) interpreter: 1 the HSM can run
 * here, 0 it cannot (the host's packages; reason says why), -1 it failed. */
static int ptkhsm_preflight(int refuse, char *reason, size_t size)
{
    int verdict = -1;
    char here[4096];
    PyObject *globals, *result = NULL, *why, *package;
    PyGILState_STATE gil = PyGILState_Ensure();
    snprintf(here, sizeof here, "%s", ptkhsm_shim_path());
    globals = PyDict_New();
    if (globals && PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) == 0) {
        PyObject *dir = PyUnicode_DecodeFSDefault(dirname(here));
        if (dir && PyDict_SetItemString(globals, "HERE", dir) == 0
                && PyDict_SetItemString(globals, "REFUSE", refuse ? Py_True : Py_False) == 0)
            result = PyRun_String(PTKHSM_PREFLIGHT, Py_file_input, globals, globals);
        Py_XDECREF(dir);
    }
    if (!result) {
        PyObject *type, *value, *trace, *text = NULL;
        PyErr_Fetch(&type, &value, &trace);
        text = value ? PyObject_Str(value) : NULL;
        snprintf(reason, size, "checking the host's Python failed: %s",
                 text && PyUnicode_Check(text) ? PyUnicode_AsUTF8(text) : "unknown error");
        PyErr_Clear();
        Py_XDECREF(text), Py_XDECREF(type), Py_XDECREF(value), Py_XDECREF(trace);
    } else {
        why = PyDict_GetItemString(globals, "reason");
        package = PyDict_GetItemString(globals, "package");
        if (why && PyUnicode_Check(why)) {
            snprintf(reason, size, "%s", PyUnicode_AsUTF8(why));
            verdict = 0;
        } else {
            if (package && PyUnicode_Check(package))
                snprintf(ptkhsm_package, sizeof ptkhsm_package, "%s", PyUnicode_AsUTF8(package));
            verdict = 1;
        }
        PyErr_Clear();
    }
    Py_XDECREF(result);
    Py_XDECREF(globals);
    PyGILState_Release(gil);
    return verdict;
}

/* The HSM in its own process: p11-kit-client.so runs `p11-kit remote` on this
 * library (where it is a C host, so the Python it was built with starts) and
 * speaks p11-kit's RPC over the pipe. The client reads its address from
 * P11_KIT_SERVER_ADDRESS only inside C_GetFunctionList: set just for that call. */
static int ptkhsm_start_remote(char *reason, size_t size)
{
    static char address[8192];
    CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
    const char *previous = getenv("P11_KIT_SERVER_ADDRESS");
    char *saved = previous ? strdup(previous) : NULL;
    CK_RV rv;
    void *client = dlopen(PTKHSM_P11KIT_CLIENT, RTLD_NOW | RTLD_LOCAL);
    if (!client) {
        snprintf(reason + strlen(reason), size - strlen(reason),
                 "; running the HSM in a separate process needs %s (Debian: p11-kit-modules): %s",
                 PTKHSM_P11KIT_CLIENT, dlerror());
        free(saved);
        return 0;
    }
    get_list = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(client, "C_GetFunctionList");
    snprintf(address, sizeof address, "|/usr/bin/env ET_PTKC_HSM_PROCESS=in-process %s remote \"%s\"",
             PTKHSM_P11KIT, ptkhsm_shim_path());
    setenv("P11_KIT_SERVER_ADDRESS", address, 1);
    rv = get_list ? get_list(&ptkhsm_remote) : CKR_GENERAL_ERROR;
    if (saved)
        setenv("P11_KIT_SERVER_ADDRESS", saved, 1);
    else
        unsetenv("P11_KIT_SERVER_ADDRESS");
    free(saved);
    if (rv != CKR_OK || !ptkhsm_remote) {
        snprintf(reason + strlen(reason), size - strlen(reason),
                 "; p11-kit-client.so gave no function list (0x%lx)", (unsigned long)rv);
        return 0;
    }
    return 1;
}

static void ptkhsm_choose_route(void)
{
    char reason[2048] = "";
    int verdict;
    const char *mode = ptkhsm_process_mode(reason, sizeof reason);
    if (!mode) {
        ptkhsm_route_taken = PTKHSM_ROUTE_BROKEN;
    } else if (!strcmp(mode, "separate")) {
        snprintf(reason, sizeof reason, "ET_PTKC_HSM_PROCESS=separate");
        ptkhsm_route_taken = ptkhsm_start_remote(reason, sizeof reason)
            ? PTKHSM_ROUTE_REMOTE : PTKHSM_ROUTE_BROKEN;
    } else {
        if (ptkhsm_foreign_python[0]) {
            snprintf(reason, sizeof reason, "this process runs Python %s; libptkhsm.so was built for Python %d.%d",
                     ptkhsm_foreign_python, PY_MAJOR_VERSION, PY_MINOR_VERSION);
            verdict = 0;
        } else {
            verdict = ptkhsm_start_python(reason, sizeof reason)
                ? ptkhsm_preflight(!strcmp(mode, "in-process"), reason, sizeof reason) : -1;
        }
        if (verdict == 1)
            ptkhsm_route_taken = PTKHSM_ROUTE_PYTHON;
        else if (verdict == 0 && !strcmp(mode, "auto") && ptkhsm_start_remote(reason, sizeof reason))
            ptkhsm_route_taken = PTKHSM_ROUTE_REMOTE;
        else
            ptkhsm_route_taken = PTKHSM_ROUTE_BROKEN;
    }
    if (ptkhsm_route_taken == PTKHSM_ROUTE_BROKEN)
        ptkhsm_report(reason);
    else if (ptkhsm_route_taken == PTKHSM_ROUTE_REMOTE) {
        const char *level = getenv("PTKHSM_LOG_LEVEL");
        if (level && (!strcasecmp(level, "DEBUG") || !strcasecmp(level, "INFO")))
            fprintf(stderr, "ptkhsm: the HSM runs in a separate process (p11-kit remote): %s\n", reason);
    }
}

/* Chosen once. A Python caller may hold the GIL while another thread chooses
 * (and needs the GIL for the preflight): wait without it. */
static int ptkhsm_route(void)
{
    static volatile int chosen = 0;
    if (!chosen) {
        PyThreadState *state = NULL;
        if (!ptkhsm_foreign_python[0] && Py_IsInitialized() && PyGILState_Check())
            state = PyEval_SaveThread();
        pthread_once(&ptkhsm_route_once, ptkhsm_choose_route);
        if (state)
            PyEval_RestoreThread(state);
        chosen = 1;
    }
    return ptkhsm_route_taken;
}

/* Runs at dlopen, and calls no Python function but Py_GetVersion (a static
 * string in every version): the Python whose symbols we bind to may be
 * another version's. A host that loaded us RTLD_LOCAL would leave libpython's
 * symbols invisible to Python's own extension modules: promote it to global. */
__attribute__((constructor)) static void ptkhsm_on_load(void)
{
    char ours[16];
    const char *running = Py_GetVersion();
    pthread_atfork(NULL, NULL, ptkhsm_on_fork_child);
    share_count_cores();
    snprintf(ours, sizeof ours, "%d.%d.", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    if (strncmp(running, ours, strlen(ours))) {
        snprintf(ptkhsm_foreign_python, sizeof ptkhsm_foreign_python, "%.*s",
                 (int)strcspn(running, " "), running);
        return;
    }
    dlopen(PTKHSM_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
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
