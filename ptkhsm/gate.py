"""Opening libptkhsm.so's call gate before a long wait.

The shim lets one C thread at a time into Python (shim/ptkhsm_shim.c): the
others sleep on a mutex instead of taking the GIL from each other at every
step of a short call. Work that spends long outside the GIL (an RSA
private-key operation, key-pair generation, a PIN's KDF, a durable write)
calls `let_others_in()` first, so the next thread runs meanwhile and long
operations still use every core. In a `ptkhsm serve` worker the same call
passes the connection's reading on to another thread (ptkhsm/transport/server.py),
so a long request holds up neither its connection nor a core. Where neither
is installed (engine tests) it does nothing.
"""


def _no_gate():
    pass


let_others_in = _no_gate


def install(open_gate):
    """Called once, by the ABI with the shim's function or by a server worker with its own."""
    global let_others_in
    let_others_in = open_gate
