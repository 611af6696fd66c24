"""The token store: sqlite in the data directory, or a PostgreSQL database shared by a group.

Both backends have one interface (db.Store, postgres.PostgresStore): token rows
(`token`, `update_token`, `init_token`, `use_attempt`), object rows opaque to
the store (`objects`, `insert`, `update`, `delete`), a change `version()` that
costs no round trip (`notifies`: nor any query, so that calls which otherwise
never look at the store may ask it), `contents`/`replace_contents` for `ptkhsm
store copy`, and `close`. psycopg is imported only when a PostgreSQL store is
opened. Public objects are sealed under the storage key of the key file
(store/files.py, one rule for both).
"""

import os

from . import db, files


def is_database(location):
    """Whether a store location names a PostgreSQL database (URI or key=value string)
    rather than a data directory."""
    return location.startswith(("postgresql://", "postgres://")) or "=" in location


def open_database(conninfo, config):
    from .postgres import PostgresStore
    return PostgresStore(conninfo, config.get("ET_PTKC_SW_STORE_CONNECT_TIMEOUT"),
                         config.get("ET_PTKC_SW_STORE_STATEMENT_TIMEOUT"), _key_path(config))


def _key_path(config):
    """The storage key file: ET_PTKC_SW_STORAGE_KEYFILE, else in the data directory."""
    configured = config.get("ET_PTKC_SW_STORAGE_KEYFILE")
    if configured:
        return configured
    datapath = config.get("ET_PTKC_SW_DATAPATH")
    files.private_dir(datapath)
    return os.path.join(datapath, db.STORAGE_KEY_FILE)


def open_location(location, config):
    """The store at a location given on a command line: a data directory or a database."""
    if is_database(location):
        return open_database(location, config)
    return db.Store(location, config.get("ET_PTKC_SW_STORAGE_KEYFILE"))


def open_store(config):
    """The HSM's store, as ET_PTKC_SW_STORE says (empty: sqlite in ET_PTKC_SW_DATAPATH)."""
    conninfo = config.get("ET_PTKC_SW_STORE")
    if conninfo:
        return open_database(conninfo, config)
    return db.Store(config.get("ET_PTKC_SW_DATAPATH"), config.get("ET_PTKC_SW_STORAGE_KEYFILE"))
