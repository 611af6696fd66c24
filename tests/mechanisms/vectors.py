"""Small loaders for the published vectors shipped in `cryptography_vectors`
(NIST CAVP .rsp/.fax files, the RSA Laboratories PKCS#1 files, RFC vectors).
"""

import re
from pathlib import Path

import pytest

cryptography_vectors = pytest.importorskip("cryptography_vectors")
ROOT = Path(cryptography_vectors.__file__).resolve().parent


def path(*parts):
    return ROOT.joinpath(*parts)


def load_nist(*parts):
    """KEY = VALUE records separated by blank lines; [headers] apply to the records after them.

    A header "[A = B]" is stored as record["[A]"] = "B", any other "[TEXT]" as
    record["section"] = "TEXT". Keys keep their spelling; values are stripped text.
    """
    records, headers, current = [], {}, {}
    for raw in path(*parts).read_text().splitlines():
        line = raw.strip()
        if not line:
            if current:
                records.append(current)
                current = {}
            continue
        if line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            if current:
                records.append(current)
                current = {}
            inner = line[1:-1]
            if "=" in inner and not inner.startswith(("P-", "K-", "B-")):
                name, value = (part.strip() for part in inner.split("=", 1))
                headers[f"[{name}]"] = value
            else:
                headers["section"] = inner.strip()
            continue
        if "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            if not current:
                current = dict(headers)
            current[name] = value
        elif current:
            current[line] = ""  # e.g. a bare "FAIL" line in the GCM decrypt files
    if current:
        records.append(current)
    return records


_PRIVATE_FIELDS = {"modulus": "n", "public exponent": "e", "exponent": "d", "prime 1": "p",
                   "prime 2": "q", "prime exponent 1": "dp", "prime exponent 2": "dq",
                   "coefficient": "qi"}
_VECTOR = re.compile(r"^# (PSS|OAEP|PKCS#1 v1\.5 Signature|PKCS#1 v1\.5 Encryption) Example")


def load_pkcs1(*parts):
    """The RSA Laboratories layout (pss-vect.txt, oaep-vect.txt, pkcs1v15*-vectors.txt and
    cryptography's oaep-custom files) -> [(key: dict of ints, [vector: dict of bytes])].

    A vector dict holds its fields by lower-case label ("message", "signature",
    "encryption", "salt"...) and "title", the comment line that opened it.
    """
    keys, key, vectors, vector, field, section = [], None, None, None, None, None
    for raw in path(*parts).read_text().splitlines():
        line = raw.strip()
        if line.startswith("# Example") or line.startswith("# ====="):
            if key is None or key:
                key, vectors, vector = {}, [], None
                keys.append((key, vectors))
            field = None
            continue
        if _VECTOR.match(line):
            vector = {"title": line[2:]}
            vectors.append(vector)
            field = None
            continue
        if line in ("# Public key", "# Private key"):
            section, field = line[2:], None
            continue
        if line.startswith("#"):
            label = line[1:].strip()
            if label.endswith(":"):
                label = label[:-1].strip().lower()
                if vector is None and label not in _PRIVATE_FIELDS:
                    vector = {"title": ""}  # pkcs1v15crypt-vectors.txt lacks the first title
                    vectors.append(vector)
                if vector is None:
                    names = _PRIVATE_FIELDS if section == "Private key" else {"modulus": "n", "exponent": "e"}
                    field = (key, names[label])
                    key[field[1]] = ""
                else:
                    field = (vector, label)
                    vector[label] = ""
            else:
                field = None
            continue
        if line and field is not None:
            target, name = field
            target[name] += line.replace(" ", "")
    out = []
    for key, vectors in keys:
        if not key:
            continue
        ints = {name: int(value, 16) for name, value in key.items() if value}
        vecs = [{name: (value if name == "title" else bytes.fromhex(value)) for name, value in v.items()}
                for v in vectors]
        out.append((ints, vecs))
    return out


def hexbytes(value):
    return bytes.fromhex(value) if value else b""
