"""`ptkhsm serve` for tests: started on a port the OS picks (or a unix socket in a
temporary directory), stopped by whoever started it."""

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PTKHSM = str(Path(sys.executable).parent / "ptkhsm")
TRANSPORTS = ("tcp", "unix")


class Server:
    def __init__(self, data_dir, transport="tcp", workers=1, env=None, port=0, socket_path=None):
        self.data_dir = str(data_dir)
        self.transport = transport
        env = dict(env or os.environ)
        env["ET_PTKC_SW_DATAPATH"] = self.data_dir
        env.pop("ET_HSM_NETCLIENT_SERVERLIST", None)
        env.setdefault("ET_PTKC_SW_PIN_KDF_ITERATIONS", "1000")
        env.setdefault("PTKHSM_LOG_LEVEL", "WARNING")
        if transport == "unix":
            path = socket_path or os.path.join(tempfile.mkdtemp(prefix="ptkhsm-sock-"), "hsm.sock")
            where = ["--unix", str(path)]
        else:
            where = ["--listen", f"127.0.0.1:{port}"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([PTKHSM, "serve", *where, "--workers", str(workers)], env=env,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"ready on (tcp|unix) (\S+)", line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"ptkhsm serve did not start: {line!r} {self.stderr()}")
        self.address = match.group(2)
        self.pid = self.proc.pid

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def env(self, base=None, **extra):
        """An environment whose libptkhsm.so uses this server."""
        env = dict(base or os.environ)
        env["ET_HSM_NETCLIENT_SERVERLIST"] = self.address
        env.update(extra)
        return env

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
