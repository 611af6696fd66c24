"""Create RSA, EC and AES keys, all sensitive, as private or as public token objects,
through python-pkcs11 and the real module; print the secret values and the attributes a
database administrator must not read either (labels, IDs, the RSA modulus: hex, one a line).

    make_keys.py MODULE TOKEN_LABEL USER_PIN private|public
"""

import sys

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters


def _b(number):
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


def main(module, label, pin, kind):
    private = kind == "private"
    common = {Attribute.TOKEN: True, Attribute.PRIVATE: private, Attribute.SENSITIVE: True}
    rsa_key = rsa.generate_private_key(65537, 2048).private_numbers()
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    aes = bytes(range(1, 33))
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=pin) as session:
        session.create_object({**common, Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                               Attribute.VALUE: aes, Attribute.LABEL: "dump-label-aes",
                               Attribute.ID: b"dump-id-aes"})
        session.create_object({
            **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.LABEL: "dump-label-rsa", Attribute.ID: b"dump-id-rsa",
            Attribute.MODULUS: _b(rsa_key.public_numbers.n), Attribute.PUBLIC_EXPONENT: _b(65537),
            Attribute.PRIVATE_EXPONENT: _b(rsa_key.d), Attribute.PRIME_1: _b(rsa_key.p),
            Attribute.PRIME_2: _b(rsa_key.q), Attribute.EXPONENT_1: _b(rsa_key.dmp1),
            Attribute.EXPONENT_2: _b(rsa_key.dmq1), Attribute.COEFFICIENT: _b(rsa_key.iqmp)})
        session.create_object({
            **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC,
            Attribute.LABEL: "dump-label-ec", Attribute.ID: b"dump-id-ec",
            Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1"), Attribute.VALUE: _b(ec_key.private_value)})
    for secret in (aes, _b(rsa_key.d), _b(rsa_key.p), _b(rsa_key.q), _b(rsa_key.dmp1), _b(rsa_key.dmq1),
                   _b(rsa_key.iqmp), _b(ec_key.private_value), _b(rsa_key.public_numbers.n),
                   *(f"dump-{what}-{name}".encode() for what in ("label", "id") for name in ("aes", "rsa", "ec"))):
        print(secret.hex())


if __name__ == "__main__":
    main(*sys.argv[1:])
