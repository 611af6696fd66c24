"""Write docs/mechanisms.md from the mechanism registry, so docs and code cannot disagree.

Run: python tools/gen_mechanism_table.py  (tests/test_docs.py checks the file is current)
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptkhsm import constants as C  # noqa: E402
from ptkhsm.hsm.mechanisms import REGISTRY, name  # noqa: E402

FUNCTIONS = [(C.CKF_ENCRYPT, "encrypt"), (C.CKF_DECRYPT, "decrypt"), (C.CKF_DIGEST, "digest"),
             (C.CKF_SIGN, "sign"), (C.CKF_VERIFY, "verify"), (C.CKF_GENERATE, "generate"),
             (C.CKF_GENERATE_KEY_PAIR, "generate key pair"), (C.CKF_WRAP, "wrap"),
             (C.CKF_UNWRAP, "unwrap"), (C.CKF_DERIVE, "derive")]


def key_types(row):
    names = []
    for ckk in row.key_types:
        try:
            names.append(C.CKK(ckk).name)
        except ValueError:
            names.append(hex(ckk))
    return ", ".join(names)


NOTES = """
## Notes

- **CKM_EDDSA** signs pure Ed25519 without a parameter and pure Ed448 with
  CK_EDDSA_PARAMS (phFlag FALSE, no context), which Ed448 always needs: Ed448
  without it is CKR_MECHANISM_PARAM_INVALID. Ed25519ctx, Ed25519ph, Ed448 with a
  context and Ed448ph (phFlag TRUE or a context) are CKR_MECHANISM_PARAM_INVALID:
  `cryptography`, which computes the signatures, implements none of them.
- **Weak mechanisms** (single DES, MD5): offered as PTK-C offers them, always
  usable; see docs/decisions.md.
"""


def render():
    lines = ["# Mechanisms", "",
             "Generated from the registry by `tools/gen_mechanism_table.py`; do not edit.",
             "Key sizes are in the unit C_GetMechanismInfo uses for the mechanism (bits for RSA, EC,",
             "DSA, DH; bytes for symmetric keys); every mechanism also reports CKF_HW.", "",
             f"{len(REGISTRY)} mechanisms.", "",
             "| mechanism | number | key sizes | functions | key types |",
             "|---|---|---|---|---|"]
    for ckm in sorted(REGISTRY):
        row = REGISTRY[ckm]
        sizes = f"{row.min_key}..{row.max_key}" if row.max_key else "-"
        functions = ", ".join(label for flag, label in FUNCTIONS if row.flags & flag)
        lines.append(f"| {name(ckm)} | {ckm:#010x} | {sizes} | {functions} | {key_types(row) or '-'} |")
    return "\n".join(lines) + "\n" + NOTES


if __name__ == "__main__":
    (ROOT / "docs" / "mechanisms.md").write_text(render())
