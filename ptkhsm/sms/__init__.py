"""The Secure Messaging System (SMS): protected channels between client and HSM.

A leaf of the layering: the client library and the HSM both use it, it
imports nothing above `constants` and `errors`. docs/sms.md is the design.
"""
