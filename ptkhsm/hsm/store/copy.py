"""`ptkhsm store copy SRC DST`: move a token store between sqlite and PostgreSQL.

Rows are copied as they are, uids included: private objects stay sealed under
their token's data key, which the PINs unlock wherever the rows are. Public
objects are sealed under a store's storage key, which each store keeps in its
own key file: they are opened with the source's and sealed again under the
target's. The target is written in one transaction, then read back and
compared with what was written.
"""

import os

from ...config import Config
from ...errors import CKRError
from . import is_database, open_location, sealing


class CopyRefused(Exception):
    """The copy was not made; the message says why."""


def _open(location, config, role):
    if not is_database(location) and role == "source" and not os.path.exists(os.path.join(location, "ptkhsm.db")):
        raise CopyRefused(f"{location} holds no ptkhsm store (no ptkhsm.db)")
    return open_location(location, config)


def copy_store(source, target, force=False, config=None):
    """Copy every token and object row from source to target -> (tokens, objects) copied."""
    config = config or Config()
    src = _open(source, config, "source")
    try:
        dst = _open(target, config, "target")
        try:
            tokens, objects = src.contents()
            held_tokens, held_objects = dst.contents()
            if (held_tokens or held_objects) and not force:
                raise CopyRefused(f"{dst.path} already holds {len(held_tokens)} token(s) and {len(held_objects)} "
                                  "object(s): give --force to replace them")
            objects = [(uid, slot, private, blob if private else sealing.seal_public(
                dst.storage_key, sealing.unseal_public(src.storage_key, blob)))
                for uid, slot, private, blob in objects]
            dst.replace_contents(tokens, objects)
            if dst.contents() != (tokens, objects):
                raise CopyRefused(f"{dst.path} does not read back what was written")
            return len(tokens), len(objects)
        finally:
            dst.close()
    finally:
        src.close()


def command(args):
    """The CLI's `store copy`: 0 on success, 1 with a message on stderr."""
    import sys
    try:
        tokens, objects = copy_store(args.source, args.target, args.force)
    except (CopyRefused, CKRError) as exc:
        print(f"ptkhsm store copy: {exc}", file=sys.stderr)
        return 1
    print(f"copied {tokens} token(s) and {objects} object(s); read back and compared")
    return 0
