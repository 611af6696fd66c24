"""nginx: a TLS server whose private key is in the token, served by forked worker processes.

nginx's master reads `ssl_certificate_key engine:pkcs11:<pkcs11: URI>` through
libp11's engine (OPENSSL_CONF loads it with the module) and then forks two
workers, which sign every handshake with a key loaded before the fork (libp11
notices the fork and initialises the module again in each worker). The
server listens with `reuseport` on a loopback port, so the kernel spreads the
connections over both workers; every answer names the worker's pid.

The handshake rate (full handshakes per second, one client, no session
reuse) is measured with the key in the token and, in the same test, with the
same kind of key in a file; the figures go to
build/conformance/nginx-handshakes.json (the matrix shows pass/fail only).

Here the workers run as the user that owns the token store (`user` = the
runner's user); test_nginx_serve.py runs them as www-data through `ptkhsm serve`.
"""

import getpass
import json
import os
import socket
import ssl
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .harness import ROOT, USER_PIN
from .keys import Keys
from .servers import free_port, serve, wait_for_port
from .tls import CA, engine_config

CLIENT = "nginx"
NGINX = "/usr/sbin/nginx"
KEYS = {"rsa": "rsa:2048", "p256": "EC:prime256v1"}
HANDSHAKES = 40  # correctness: new connections, each a full handshake
RATE_SECONDS = float(os.environ.get("PTKHSM_HANDSHAKE_SECONDS", "2"))
FIGURES = ROOT / "build" / "conformance" / "nginx-handshakes.json"
# nginx clears its workers' environment: these are passed on (the token store, the engine)
ENVIRONMENT = ["ET_PTKC_SW_DATAPATH", "ET_PTKC_SW_PIN_KDF_ITERATIONS", "SOFTHSM2_CONF", "OPENSSL_CONF", "HOME"]


class Nginx:
    def __init__(self, token):
        self.token = token
        self.dir = token.dir / "nginx"
        self.dir.mkdir(exist_ok=True)
        self.keys = Keys(token, "nginx")
        self.ca = CA(self.dir)
        self.env = dict(token.env, OPENSSL_CONF=str(engine_config(self.dir / "openssl.cnf", token.module.path, init=True)))
        self._servers = 0
        self.user = getpass.getuser()  # the workers' user
        self.environment = ENVIRONMENT  # passed on to the workers
        self.prefix = []  # before nginx's command line (test_nginx_serve.py: a view of the Python)

    def token_key(self, kind):
        """(ssl_certificate_key value, certificate) for the token's key pair of this kind."""
        key = self.keys.pair(KEYS[kind])
        cert = self.dir / f"server-{kind}.crt"
        if not cert.exists():
            cert.write_bytes(self.ca.issue(key.public, "localhost", server=True)
                             .public_bytes(serialization.Encoding.PEM))
        uri = self.token.uri(object=key.label, type="private", **{"pin-value": USER_PIN})
        return f"engine:pkcs11:{uri}", cert

    def file_key(self, kind):
        """(ssl_certificate_key value, certificate) for a software key of this kind, in a PEM file."""
        private = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
        path = self.dir / f"file-{kind}.key"
        path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        path.chmod(0o600)
        cert = self.dir / f"file-{kind}.crt"
        cert.write_bytes(self.ca.issue(private.public_key(), "localhost", server=True)
                         .public_bytes(serialization.Encoding.PEM))
        return str(path), cert

    def config(self, key, cert, port):
        self._servers += 1
        run = self.dir / f"run{self._servers}"
        run.mkdir()
        quoted = key.replace('"', '\\"')
        temp = "".join(f"    {name}_temp_path {run}/{name};\n" for name in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        path = run / "nginx.conf"
        path.write_text(
            "daemon off;\nmaster_process on;\nworker_processes 2;\n"
            f"user {self.user};\npid {run}/nginx.pid;\nerror_log {run}/error.log info;\n"
            + "".join(f"env {name};\n" for name in self.environment) +
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log off;\n{temp}"
            "    server {\n"
            f"        listen 127.0.0.1:{port} ssl reuseport;\n"
            "        server_name localhost;\n"
            f"        ssl_certificate {cert};\n"
            f"        ssl_certificate_key \"{quoted}\";\n"
            "        ssl_protocols TLSv1.3;\n        ssl_session_cache off;\n        ssl_session_tickets off;\n"
            "        keepalive_timeout 0;\n"
            "        location / { return 200 \"worker $pid\\n\"; }\n"
            "    }\n}\n")
        return path, run

    @contextmanager
    def serving(self, key, cert):
        """nginx with this key, listening: (server, port); stopped on leaving the block."""
        port = free_port()
        config, run = self.config(key, cert, port)
        with serve("nginx", [*self.prefix, NGINX, "-p", run, "-c", config, "-e", "stderr"], self.env, self.dir,
                   log=run / "error.log") as server:
            if not wait_for_port(port, time.monotonic() + 60, server.process):
                server.stop()
                pytest.fail(f"nginx did not start:\n{server.report()}")
            yield server, port


def client_context(ca):
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def get(context, port):
    """One HTTPS request on a new connection (a full handshake); (worker pid answered, signature kind)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), data
    assert body.startswith("worker "), data
    return int(body.split()[1])


def children(pid):
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


@pytest.fixture(scope="module")
def nginx(token):
    return Nginx(token)


@pytest.mark.parametrize("kind", list(KEYS))
def test_tls_workers(nginx, kind):
    """master + 2 forked workers serve TLS 1.3 with the token key: 40 full handshakes, all verified, both workers answer"""
    key, cert = nginx.token_key(kind)
    with nginx.serving(key, cert) as (server, port):
        master = server.process.pid
        deadline = time.monotonic() + 30
        while len(children(master)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(master)
        assert len(workers) == 2, server.report()
        context = client_context(nginx.ca.pem)
        answered = [get(context, port) for _ in range(HANDSHAKES)]
        assert set(answered) <= workers, (answered, workers)
        assert set(answered) == workers, f"only {set(answered)} of the workers {workers} answered"
        assert children(master) == workers, "a worker died: " + server.report()


def _rate(nginx, key, cert):
    """Full handshakes (and one request each) per second, one client, for RATE_SECONDS."""
    with nginx.serving(key, cert) as (_, port):
        context = client_context(nginx.ca.pem)
        get(context, port)  # warm: both sides loaded
        count, start = 0, time.monotonic()
        while time.monotonic() - start < RATE_SECONDS:
            get(context, port)
            count += 1
        return count / (time.monotonic() - start)


def _record(module, kind, figures):
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    try:
        recorded = json.loads(FIGURES.read_text())
    except (FileNotFoundError, ValueError):
        recorded = {}
    recorded.setdefault(kind, {})[module] = figures
    recorded["seconds per figure"] = RATE_SECONDS
    FIGURES.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("kind", list(KEYS))
def test_handshake_rate(nginx, kind):
    """full TLS handshakes per second, one client, key in the token and (same test) in a file"""
    in_token = _rate(nginx, *nginx.token_key(kind))
    in_file = _rate(nginx, *nginx.file_key(kind))
    _record(nginx.token.module.name, kind, {"token key": round(in_token, 1), "file key": round(in_file, 1)})
    assert in_token > 0 and in_file > 0
