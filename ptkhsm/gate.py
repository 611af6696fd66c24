"""Opening libptkhsm.so's call gate before a long wait.

The shim lets one C thread at a time into Python (shim/ptkhsm_shim.c): the
others sleep on a mutex instead of taking the GIL from each other at every
step of a short call. Work that spends long outside the GIL (an RSA
private-key operation, key-pair generation, a PIN's KDF, a durable write)
calls `let_others_in()` first, so the next thread runs meanwhile and long
operations still use every core. A brief one (an ECDSA signature, 20 µs in
OpenSSL) calls `share_cores()`: the shim opens the gate for it only when no
thread waits to come in and a core is free (shim/share.h). In a `ptkhsm serve`
worker `let_others_in` passes the connection's reading on to another thread
(ptkhsm/transport/server.py), so a long request holds up neither its
connection nor a core; a brief one keeps the reading. Where neither
is installed (engine tests) it does nothing.
"""


def _no_gate():
    pass


let_others_in = _no_gate
share_cores = _no_gate


def install(open_gate, share=_no_gate):
    """Called once, by the ABI with the shim's functions or by a server worker with its own
    (where a brief computation keeps the connection's reading: share)."""
    global let_others_in, share_cores
    let_others_in, share_cores = open_gate, share
