"""Keys made in a token by pkcs11-tool, with their public halves read back for independent checks."""

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# pkcs11-tool usage flags per key family.
USAGE = {
    "rsa": ["--usage-sign", "--usage-decrypt", "--usage-wrap"],
    "EC": ["--usage-sign", "--usage-derive"],
}


CURVES = {"EC:prime256v1": ec.SECP256R1, "EC:secp384r1": ec.SECP384R1, "EC:secp521r1": ec.SECP521R1,
          "EC:secp256k1": ec.SECP256K1}


@dataclass
class Key:
    id: str
    label: str
    spec: str
    public: object = None      # a cryptography public key, for key pairs
    public_der: Path = None    # SubjectPublicKeyInfo (DER), as pkcs11-tool exported it
    value: bytes = None        # a secret key's value, when the scenario imported it


def load_public(data):
    if data.startswith(b"-----BEGIN"):
        return serialization.load_pem_public_key(data)
    return serialization.load_der_public_key(data)


class Keys:
    """Per runner and token: each key spec is generated once, on first use.

    A spec is what `pkcs11-tool --key-type` takes: rsa:2048, EC:prime256v1,
    EC:edwards25519, AES:32, GENERIC:32, DES3:24. Labels are `<prefix>-<spec>`.
    """

    def __init__(self, token, prefix):
        self.token = token
        self.prefix = prefix
        self._made = {}

    def pair(self, spec):
        if spec not in self._made:
            key = Key(self.token.new_id(), f"{self.prefix}-{spec}", spec)
            family = spec.split(":")[0]
            self.token.tool("--keypairgen", "--key-type", spec, "--id", key.id, "--label", key.label,
                            *USAGE.get(family, ["--usage-sign"]))
            key.public_der = self.token.dir / f"{key.label}.pub"
            if spec in CURVES:
                key.public = self._ec_public_from_listing(key.id, CURVES[spec])
            else:
                self.token.tool("--read-object", "--type", "pubkey", "--id", key.id, "-o", key.public_der)
                key.public = load_public(key.public_der.read_bytes())
            key.public_der.write_bytes(key.public.public_bytes(serialization.Encoding.DER,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
            self._made[spec] = key
        return self._made[spec]

    def _ec_public_from_listing(self, key_id, curve):
        """The EC public key from -O's EC_POINT.

        pkcs11-tool 0.23 --read-object fails on P-384 public keys ("cannot
        create EVP_PKEY") with any module, so EC keys are read from the listing.
        (It frees the key's OSSL_PARAMs before building the key from them, fixed
        in OpenSC 0.24 by commit 63d4bd3d3: on other curves it fails now and then.)
        """
        listing = self.token.tool("-O", "--type", "pubkey").stdout
        for block in listing.split("Public Key Object")[1:]:
            if re.search(rf"^\s+ID:\s+{key_id}$", block, re.M):
                point = bytes.fromhex(re.search(r"EC_POINT:\s+([0-9a-f]+)", block).group(1))
                length = point[1]
                raw = point[2:] if length < 0x80 else point[2 + (length & 0x7F):]
                return ec.EllipticCurvePublicKey.from_encoded_point(curve(), raw)
        raise AssertionError(f"public key {key_id} not in the listing:\n{listing}")

    def remove(self, spec):
        """Delete a key pair made here (both halves), if it was made."""
        key = self._made.pop(spec, None)
        if key is not None:
            for kind in ("privkey", "pubkey"):
                self.token.tool("--delete-object", "--type", kind, "--id", key.id)

    def secret(self, spec, *flags):
        """A secret key generated in the token (flags: e.g. --extractable, --usage-wrap)."""
        name = spec + "".join(flags)
        if name not in self._made:
            key = Key(self.token.new_id(), f"{self.prefix}-{spec}{len(self._made)}", spec)
            self.token.tool("--keygen", "--key-type", spec, "--id", key.id, "--label", key.label, *flags)
            self._made[name] = key
        return self._made[name]

    def imported(self, spec, value, *flags):
        """A secret key whose value we know: written into the token with pkcs11-tool -w."""
        name = f"{spec}={value.hex()}" + "".join(flags)
        if name not in self._made:
            key = Key(self.token.new_id(), f"{self.prefix}-imported{len(self._made)}", spec, value=value)
            path = self.token.dir / f"{key.label}.bin"
            path.write_bytes(value)
            self.token.tool("--write-object", path, "--type", "secrkey", "--key-type", spec,
                            "--id", key.id, "--label", key.label, *flags)
            self._made[name] = key
        return self._made[name]
