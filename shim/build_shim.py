"""Build libptkhsm.so with cffi's embedding API.

The PKCS#11 entry points are small C functions (generated here from the
OASIS `pkcs11f.h`, so no prototype is retyped) that call one `extern
"Python"` function each and return CKR_GENERAL_ERROR if the embedded init
code did not complete. The function lists and C_GetInterface* are plain C
and never start Python.

build(target_dir, version) -> path of the built library.
"""

import os
import platform
import re
import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
INCLUDE = HERE / "include"

# Functions answered in C without Python.
PURE_C = {"C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface"}
LAST_2_40 = "C_WaitForSlotEvent"
LAST_3_0 = "C_MessageVerifyFinal"

TYPES = """
typedef unsigned char CK_BYTE;
typedef CK_BYTE CK_CHAR;
typedef CK_BYTE CK_UTF8CHAR;
typedef CK_BYTE CK_BBOOL;
typedef unsigned long int CK_ULONG;
typedef long int CK_LONG;
typedef CK_ULONG CK_FLAGS;
typedef CK_BYTE *CK_BYTE_PTR;
typedef CK_CHAR *CK_CHAR_PTR;
typedef CK_UTF8CHAR *CK_UTF8CHAR_PTR;
typedef CK_ULONG *CK_ULONG_PTR;
typedef void *CK_VOID_PTR;
typedef CK_VOID_PTR *CK_VOID_PTR_PTR;
typedef CK_ULONG CK_NOTIFICATION;
typedef CK_ULONG CK_SLOT_ID;
typedef CK_SLOT_ID *CK_SLOT_ID_PTR;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_SESSION_HANDLE *CK_SESSION_HANDLE_PTR;
typedef CK_ULONG CK_USER_TYPE;
typedef CK_ULONG CK_STATE;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_OBJECT_HANDLE *CK_OBJECT_HANDLE_PTR;
typedef CK_ULONG CK_OBJECT_CLASS;
typedef CK_ULONG CK_KEY_TYPE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_MECHANISM_TYPE *CK_MECHANISM_TYPE_PTR;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_RSA_PKCS_MGF_TYPE;
typedef CK_ULONG CK_RSA_PKCS_OAEP_SOURCE_TYPE;
typedef CK_ULONG CK_EC_KDF_TYPE;
typedef CK_RV (*CK_NOTIFY)(CK_SESSION_HANDLE, CK_NOTIFICATION, CK_VOID_PTR);

typedef struct CK_VERSION { CK_BYTE major; CK_BYTE minor; } CK_VERSION;
typedef CK_VERSION *CK_VERSION_PTR;
typedef struct CK_INFO {
  CK_VERSION cryptokiVersion; CK_UTF8CHAR manufacturerID[32]; CK_FLAGS flags;
  CK_UTF8CHAR libraryDescription[32]; CK_VERSION libraryVersion;
} CK_INFO;
typedef CK_INFO *CK_INFO_PTR;
typedef struct CK_SLOT_INFO {
  CK_UTF8CHAR slotDescription[64]; CK_UTF8CHAR manufacturerID[32]; CK_FLAGS flags;
  CK_VERSION hardwareVersion; CK_VERSION firmwareVersion;
} CK_SLOT_INFO;
typedef CK_SLOT_INFO *CK_SLOT_INFO_PTR;
typedef struct CK_TOKEN_INFO {
  CK_UTF8CHAR label[32]; CK_UTF8CHAR manufacturerID[32]; CK_UTF8CHAR model[16];
  CK_CHAR serialNumber[16]; CK_FLAGS flags;
  CK_ULONG ulMaxSessionCount; CK_ULONG ulSessionCount; CK_ULONG ulMaxRwSessionCount;
  CK_ULONG ulRwSessionCount; CK_ULONG ulMaxPinLen; CK_ULONG ulMinPinLen;
  CK_ULONG ulTotalPublicMemory; CK_ULONG ulFreePublicMemory;
  CK_ULONG ulTotalPrivateMemory; CK_ULONG ulFreePrivateMemory;
  CK_VERSION hardwareVersion; CK_VERSION firmwareVersion; CK_CHAR utcTime[16];
} CK_TOKEN_INFO;
typedef CK_TOKEN_INFO *CK_TOKEN_INFO_PTR;
typedef struct CK_SESSION_INFO {
  CK_SLOT_ID slotID; CK_STATE state; CK_FLAGS flags; CK_ULONG ulDeviceError;
} CK_SESSION_INFO;
typedef CK_SESSION_INFO *CK_SESSION_INFO_PTR;
typedef struct CK_ATTRIBUTE { CK_ATTRIBUTE_TYPE type; CK_VOID_PTR pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;
typedef CK_ATTRIBUTE *CK_ATTRIBUTE_PTR;
typedef struct CK_MECHANISM {
  CK_MECHANISM_TYPE mechanism; CK_VOID_PTR pParameter; CK_ULONG ulParameterLen;
} CK_MECHANISM;
typedef CK_MECHANISM *CK_MECHANISM_PTR;
typedef struct CK_MECHANISM_INFO { CK_ULONG ulMinKeySize; CK_ULONG ulMaxKeySize; CK_FLAGS flags; } CK_MECHANISM_INFO;
typedef CK_MECHANISM_INFO *CK_MECHANISM_INFO_PTR;
typedef struct CK_C_INITIALIZE_ARGS {
  CK_RV (*CreateMutex)(CK_VOID_PTR_PTR); CK_RV (*DestroyMutex)(CK_VOID_PTR);
  CK_RV (*LockMutex)(CK_VOID_PTR); CK_RV (*UnlockMutex)(CK_VOID_PTR);
  CK_FLAGS flags; CK_VOID_PTR pReserved;
} CK_C_INITIALIZE_ARGS;
typedef struct CK_GCM_PARAMS {
  CK_BYTE_PTR pIv; CK_ULONG ulIvLen; CK_ULONG ulIvBits; CK_BYTE_PTR pAAD; CK_ULONG ulAADLen;
  CK_ULONG ulTagBits;
} CK_GCM_PARAMS;
typedef struct CK_AES_CTR_PARAMS { CK_ULONG ulCounterBits; CK_BYTE cb[16]; } CK_AES_CTR_PARAMS;
typedef struct CK_RSA_PKCS_PSS_PARAMS {
  CK_MECHANISM_TYPE hashAlg; CK_RSA_PKCS_MGF_TYPE mgf; CK_ULONG sLen;
} CK_RSA_PKCS_PSS_PARAMS;
typedef struct CK_RSA_PKCS_OAEP_PARAMS {
  CK_MECHANISM_TYPE hashAlg; CK_RSA_PKCS_MGF_TYPE mgf; CK_RSA_PKCS_OAEP_SOURCE_TYPE source;
  CK_VOID_PTR pSourceData; CK_ULONG ulSourceDataLen;
} CK_RSA_PKCS_OAEP_PARAMS;
typedef struct CK_ECDH1_DERIVE_PARAMS {
  CK_EC_KDF_TYPE kdf; CK_ULONG ulSharedDataLen; CK_BYTE_PTR pSharedData;
  CK_ULONG ulPublicDataLen; CK_BYTE_PTR pPublicData;
} CK_ECDH1_DERIVE_PARAMS;
typedef struct CK_EDDSA_PARAMS {
  CK_BBOOL phFlag; CK_ULONG ulContextDataLen; CK_BYTE_PTR pContextData;
} CK_EDDSA_PARAMS;
typedef struct CK_KEY_DERIVATION_STRING_DATA { CK_BYTE_PTR pData; CK_ULONG ulLen; } CK_KEY_DERIVATION_STRING_DATA;
typedef struct CK_AES_CBC_ENCRYPT_DATA_PARAMS {
  CK_BYTE iv[16]; CK_BYTE_PTR pData; CK_ULONG length;
} CK_AES_CBC_ENCRYPT_DATA_PARAMS;
typedef struct CK_DES_CBC_ENCRYPT_DATA_PARAMS {
  CK_BYTE iv[8]; CK_BYTE_PTR pData; CK_ULONG length;
} CK_DES_CBC_ENCRYPT_DATA_PARAMS;

const char *ptkhsm_shim_path(void);
void ptkhsm_mark_ready(void);
int ptkhsm_fork_pending(void);
void ptkhsm_fork_handled(void);
const char *ptkhsm_shim_version(void);
const char *ptkhsm_shim_package(void);
void ptkhsm_let_others_in(void);
void ptkhsm_share_cores(void);
CK_RV ptkhsm_value_out(CK_ATTRIBUTE_PTR template, CK_ULONG index, const char *value, CK_ULONG length);
"""

_FUNC = re.compile(r"CK_PKCS11_FUNCTION_INFO\((\w+)\)\s*#ifdef CK_NEED_ARG_LIST\s*\((.*?)\);\s*#endif", re.S)


def functions():
    """[(name, [(type, arg)])] of the v2.40 and 3.0 interfaces, in header order."""
    text = (INCLUDE / "pkcs11f.h").read_text()
    out = []
    for name, args in _FUNC.findall(text):
        args = re.sub(r"/\*.*?\*/", "", args, flags=re.S)
        params = []
        for part in args.split(","):
            words = part.split()
            if words:
                params.append((" ".join(words[:-1]), words[-1]))
        out.append((name, params))
        if name == LAST_3_0:
            break
    return out


def python_functions():
    return [(name, params) for name, params in functions() if name not in PURE_C]


def _cdef():
    lines = [TYPES]
    for name, params in python_functions():
        decl = ", ".join(f"{t} {a}" for t, a in params) or "void"
        lines.append(f'extern "Python" CK_RV ptk_{name}({decl});')
    return "\n".join(lines)


def _wrappers():
    lines = []
    for name, params in python_functions():
        decl = ", ".join(f"{t} {a}" for t, a in params) or "void"
        lines.append(f"static CK_RV ptk_{name}({decl});")
    names = [name for name, _ in functions()]
    v3_only = set(names[names.index(LAST_2_40) + 1:])
    for name, params in python_functions():
        decl = ", ".join(f"{t} {a}" for t, a in params) or "void"
        call = ", ".join(a for _, a in params)
        # p11-kit's RPC carries the 2.40 functions only
        remote = "CKR_FUNCTION_NOT_SUPPORTED" if name in v3_only else f"ptkhsm_remote->{name}({call})"
        forked = "" if name == "C_Initialize" else \
            "    if (ptkhsm_forked)\n        return CKR_CRYPTOKI_NOT_INITIALIZED;\n"
        lines.append(f"CK_RV {name}({decl}) {{\n"
                     f"    CK_RV rv;\n"
                     f"    switch (ptkhsm_route()) {{\n"
                     f"    case PTKHSM_ROUTE_REMOTE:\n        return {remote};\n"
                     f"    case PTKHSM_ROUTE_BROKEN:\n        return CKR_GENERAL_ERROR;\n"
                     f"    }}\n{forked}"
                     f"    ptkhsm_gate_enter();\n"
                     f"    rv = ptk_{name}({call});\n"
                     f"    ptkhsm_gate_leave();\n"
                     f"    return ptkhsm_ready ? rv : CKR_GENERAL_ERROR;\n}}")
    return "\n".join(lines)


def _init_code(names):
    return f'''
import os, sys
from _ptkhsm_shim import ffi, lib

def _start():
    # The C preflight (shim/preflight.py) has put ptkhsm's site-packages on
    # sys.path after the host's and chosen the package: it is loaded by path,
    # so no directory goes ahead of the host's.
    package = os.fsdecode(ffi.string(lib.ptkhsm_shim_package()))
    if package and "ptkhsm" not in sys.modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "ptkhsm", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
        module = importlib.util.module_from_spec(spec)
        sys.modules["ptkhsm"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["ptkhsm"]
            raise
    from ptkhsm.abi import entry
    entry.attach(ffi, lib, {names!r})
    lib.ptkhsm_mark_ready()

_start()
'''


def _pins():
    """{distribution: version} of the pinned runtime dependencies, and {module: distribution}."""
    project = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[name.strip().lower()] = version.strip()
    imports = {name.replace("-", "_"): name for name in pins}
    if "cffi" in pins:
        imports["_cffi_backend"] = "cffi"  # the C half, imported by cffi's embedding first
    return pins, imports


def _preflight_source(sitedirs, version):
    pins, imports = _pins()
    head = f"SITEDIRS = {sitedirs!r}\nVERSION = {version!r}\nPINS = {pins!r}\nIMPORTS = {imports!r}\n"
    return head + (HERE / "preflight.py").read_text()


def _c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", '\\n"\n"') + '"'


def _p11kit_client():
    """Where p11-kit-client.so is (Debian: p11-kit-modules), for hosts that need a separate process."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    candidates = [f"/usr/lib/{multiarch}/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/pkcs11"]
    for directory in candidates:
        if os.path.exists(f"{directory}/p11-kit-client.so"):
            return f"{directory}/p11-kit-client.so"
    return f"{candidates[0]}/p11-kit-client.so"


def build(target_dir, version, tmpdir):
    config = sysconfig.get_config_vars()
    libdir = config["LIBDIR"]
    ldversion = config["LDVERSION"]
    soname = config.get("INSTSONAME") or f"libpython{ldversion}.so.1.0"
    paths = sysconfig.get_paths()
    sitedir_list = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    sitedirs = ":".join(sitedir_list)
    stdlib_zip = f"{sys.base_prefix}/lib/python{sys.version_info[0]}{sys.version_info[1]}.zip"
    searchpath = ":".join([stdlib_zip, paths["stdlib"], sysconfig.get_config_var("DESTSHARED"),
                           sitedirs])
    ffi = cffi.FFI()
    ffi.cdef(_cdef())
    ffi.embedding_api("")  # embedding mode; the exports are the C wrappers
    c_part = (HERE / "ptkhsm_shim.c").read_text()
    source = "\n".join([
        f'#define PTKHSM_LIBPYTHON "{soname}"',
        f'#define PTKHSM_PYTHONHOME "{sys.base_prefix}"',
        f'#define PTKHSM_VERSION "{version}"',
        f'#define PTKHSM_P11KIT_CLIENT "{_p11kit_client()}"',
        f'#define PTKHSM_P11KIT "{shutil.which("p11-kit") or "/usr/bin/p11-kit"}"',
        f'static const char PTKHSM_PREFLIGHT[] = {_c_string(_preflight_source(sitedir_list, version))};',
        f'#define PTKHSM_SEARCHPATH "{searchpath}"',
        f'#define PTKHSM_STDLIB "{paths["stdlib"]}"',
        c_part,
        _wrappers(),
    ])
    ffi.set_source("_ptkhsm_shim", source,
                   include_dirs=[str(INCLUDE), str(HERE)],
                   libraries=[f"python{ldversion}", "dl", "pthread"],
                   library_dirs=[libdir],
                   extra_link_args=[f"-Wl,-rpath,{libdir}", "-Wl,-soname,libptkhsm.so",
                                    # never unmapped: an interpreter holds code and types from it
                                    "-Wl,-z,nodelete"],
                   extra_compile_args=["-Wno-deprecated-declarations"])
    names = [name for name, _ in python_functions()]
    ffi.embedding_init_code(_init_code(names))
    target = Path(target_dir) / "libptkhsm.so"
    built = ffi.compile(tmpdir=str(tmpdir), target=str(target), verbose=False)
    return built


if __name__ == "__main__":
    # Development: build into the source tree (python shim/build_shim.py).
    import re as _re
    import tempfile

    root = HERE.parent
    version = _re.search(r'__version__ = "([^"]+)"', (root / "ptkhsm" / "__init__.py").read_text()).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(build(root / "ptkhsm", version, tmp))
