/* pkcs11.h with the five platform macros it asks for, as on Unix-like systems.
 * The project's C programs (tests/c, conformance/c) include this, not pkcs11.h. */
#ifndef PKCS11_UNIX_H
#define PKCS11_UNIX_H
#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (* name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (* name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"
#endif
