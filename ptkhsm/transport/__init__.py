"""Transports between the client library and the HSM: the server side
(`handler`, `server`) and the client's channel (`channel`). In process the
client calls an Application directly and no transport is involved."""
