/* The slot whose token label (32 bytes, space padded) is `label`: shared by the
 * conformance C programs (example.c keeps its own copy so it stands alone). */
#ifndef CONFORMANCE_FIND_SLOT_H
#define CONFORMANCE_FIND_SLOT_H
#include <string.h>
#include "pkcs11_unix.h"

static int find_slot(CK_FUNCTION_LIST_PTR p11, const char *label, CK_SLOT_ID *slot)
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
#endif
