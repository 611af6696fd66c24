"""Real clients over the real module with ET_PTKC_SW_STORE pointing at PostgreSQL:
python-pkcs11's own suite, our python-pkcs11 object tests, pkcs11-tool --test; and
what a pg_dump of such a database holds."""

import re
import subprocess
import sys


from conftest import MODULE, ROOT, SO_PIN, USER_PIN, fresh_env, init_token
from pg.conftest import BIN, dbname

SUITE = ROOT / ".cache" / "python-pkcs11-0.10.1-tests"


def _counts(output):
    summary = output.strip().splitlines()[-1]
    return summary, {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}


def test_python_pkcs11_suite_on_postgresql(pg_uri):
    env = fresh_env(ET_PTKC_SW_STORE=pg_uri, PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="upstream",
                    PKCS11_TOKEN_PIN=USER_PIN, PKCS11_TOKEN_SO_PIN=SO_PIN)
    init_token(env, label="upstream")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=SUITE, env=env, capture_output=True, text=True, timeout=1200)
    summary, counts = _counts(result.stdout)
    print(summary)
    assert counts.get("failed", 0) == 0 and counts.get("errors", counts.get("error", 0)) == 0, result.stdout[-5000:]
    assert counts.get("passed", 0) >= 140, summary


def test_our_object_tests_on_postgresql(pg_uri):
    env = fresh_env(ET_PTKC_SW_STORE=pg_uri)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_objects.py", "tests/test_object_index.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary, counts = _counts(result.stdout)
    print(summary)
    assert result.returncode == 0 and counts.get("passed", 0) >= 5, result.stdout[-5000:]


def _tool(env, *args):
    return subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", "0", "--login", "--pin", USER_PIN, *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_pkcs11_tool_self_test_on_postgresql(pg_uri):
    env = fresh_env(ET_PTKC_SW_STORE=pg_uri)
    init_token(env)
    for key, ident in (("rsa:2048", "01"), ("EC:prime256v1", "02")):
        made = _tool(env, "--keypairgen", "--key-type", key, "--id", ident, "--label", key)
        assert made.returncode == 0, made.stderr
    made = _tool(env, "--keygen", "--key-type", "AES:32", "--id", "03", "--label", "aes")
    assert made.returncode == 0, made.stderr
    result = _tool(env, "--test")
    assert result.returncode == 0 and "No errors" in result.stdout, result.stdout + result.stderr
    # A second module with its own data directory finds the same keys.
    listed = _tool(fresh_env(ET_PTKC_SW_STORE=pg_uri), "--list-objects")
    assert listed.stdout.count("Private Key Object") == 2 and "label:      aes" in listed.stdout, listed.stdout


def test_password_not_in_the_log(pg_uri):
    from pg.conftest import PASSWORD
    env = fresh_env(ET_PTKC_SW_STORE=pg_uri.replace(PASSWORD, "An0ther-Wr0ng-Pw"), PTKHSM_LOG_LEVEL="DEBUG")
    result = subprocess.run(["pkcs11-tool", "--module", MODULE, "-L"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr, result.stderr
    assert "An0ther-Wr0ng-Pw" not in result.stderr + result.stdout


# -- what the database and its dumps hold -------------------------------------

DUMP_SO_PIN, DUMP_USER_PIN = "So-Pin-Dump-5519", "User-Pin-Dump-8842"


def _pg_dump(pg_server, pg_uri):
    return subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "pg_dump"), "-h", str(pg_server.dir),
                           "-U", "postgres", "-d", dbname(pg_uri)], check=True, capture_output=True).stdout


def _leaks(pg_server, pg_uri, kind):
    """Keys of `kind` (private / public objects) made through the module -> the secret
    values found in a pg_dump, as text or inside any bytea value."""
    env = fresh_env(ET_PTKC_SW_STORE=pg_uri)
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "0"]
    subprocess.run(tool + ["--init-token", "--label", "dumped", "--so-pin", DUMP_SO_PIN], check=True, env=env,
                   capture_output=True)
    subprocess.run(tool + ["--init-pin", "--login", "--so-pin", DUMP_SO_PIN, "--pin", DUMP_USER_PIN], check=True,
                   env=env, capture_output=True)
    made = subprocess.run([sys.executable, str(ROOT / "tests" / "pg" / "make_keys.py"), MODULE, "dumped",
                           DUMP_USER_PIN, kind], env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    secrets = [bytes.fromhex(line) for line in made.stdout.split()] + [DUMP_SO_PIN.encode(), DUMP_USER_PIN.encode()]
    dump = _pg_dump(pg_server, pg_uri)
    assert b"COPY public.ptkhsm_objects" in dump
    values = b"".join(bytes.fromhex(h.decode()) for h in re.findall(rb"\\\\x([0-9a-f]+)", dump))
    assert len(values) > 1000, "no bytea values found in the dump"
    assert b"dumped".hex().encode() in dump  # the token label is in clear (docs/store-postgresql.md)
    return [s.hex() for s in secrets if s in dump or s in values or s.hex().encode() in dump]


def test_pg_dump_holds_no_private_key_material_or_pin(pg_server, pg_uri):
    # nor labels, IDs or public values: the whole template is sealed
    assert not _leaks(pg_server, pg_uri, "private")


def test_pg_dump_holds_no_sensitive_material_of_public_objects(pg_server, pg_uri):
    # sealed under the storage key, which is in its own file, not in the database
    assert not _leaks(pg_server, pg_uri, "public")
