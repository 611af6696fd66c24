"""The C ABI: the only layer that knows about cffi. Imported only inside libptkhsm.so."""
