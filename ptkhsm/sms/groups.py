"""The key-agreement groups of the two SMS modes.

ADH2 agrees on an ephemeral ECDH P-521 secret (an SP 800-56A Rev. 3 ECC CDH
scheme on an approved curve; Luna's STC uses the same curve). Legacy ADH,
kept for PTK-C firmware older than 5.01.00, uses finite-field Diffie-Hellman
in the 2048-bit MODP group of RFC 3526 (group 14).

The MODP prime is not typed in: RFC 3526 defines it as
2^2048 - 2^1984 - 1 + 2^64 * (floor(2^1918 * pi) + 124476), computed here
from pi once, on first use (tests check that it is a safe prime).
"""

import functools

from cryptography.hazmat.primitives.asymmetric import ec

from ..ffdh import DHParameterNumbers

ADH2_CURVE = ec.SECP521R1


def _pi_scaled(bits):
    """floor(2**bits * pi) by Machin's formula, pi = 16 atan(1/5) - 4 atan(1/239),
    in integers with 64 guard bits."""
    one = 1 << (bits + 64)

    def atan_inverse(x):
        total, term, n, sign = 0, one // x, 1, 1
        x2 = x * x
        while term:
            total += sign * (term // n)
            term //= x2
            n += 2
            sign = -sign
        return total
    return (16 * atan_inverse(5) - 4 * atan_inverse(239)) >> 64


@functools.cache
def modp2048():
    """RFC 3526 group 14: (p, g=2) as cryptography DH parameters."""
    p = 2 ** 2048 - 2 ** 1984 - 1 + 2 ** 64 * (_pi_scaled(1918) + 124476)
    return DHParameterNumbers(p, 2).parameters()
