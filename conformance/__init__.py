"""Conformance runners: real PKCS#11 clients against libptkhsm.so and SoftHSMv2 (see harness.py)."""
