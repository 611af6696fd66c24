"""Loopback servers for the application runners (sshd, openvpn, nginx, openssl s_server).

A server is started on 127.0.0.1, on a port the OS chose, and stopped by the
runner that started it (`Server.stop`, or leaving the `serve` block), so
nothing is left running and parallel runs never collide.
"""

import os
import re
import select
import signal
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port free at this moment (for servers that cannot be given port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, deadline, process=None):
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Server:
    """A server process in its own process group, with its output kept for the failure report."""

    def __init__(self, name, argv, env, cwd, log=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.output = ""
        self._pending = ""  # read, not yet split into lines
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", env=env, cwd=cwd, start_new_session=True)

    def wait_for(self, pattern, timeout=60):
        """Read output until a line matches `pattern`; the match, or the scenario fails.

        Reads the pipe unbuffered (os.read): a buffered reader would hold lines
        that select() no longer reports.
        """
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while time.monotonic() < deadline:
            while "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                self.output += line + "\n"
                found = re.search(pattern, line)
                if found:
                    return found
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._pending += chunk.decode(errors="replace")
            elif self.process.poll() is not None:
                break
        self.stop()
        pytest.fail(f"{self.name} did not get ready ({pattern!r}):\n{self.report()}")

    def report(self):
        text = self.output
        if self.log is not None and os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                text += f"--- {self.log}\n" + f.read()
        return "\n".join(text.rstrip().splitlines()[-40:])

    def stop(self):
        """Stop the server and everything it forked (its process group)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # workers that outlived their master
        except ProcessLookupError:
            pass
        try:
            rest, _ = self.process.communicate(timeout=10)
            self.output += self._pending + (rest or "")
            self._pending = ""
        except subprocess.TimeoutExpired:  # a detached child (sshd's per-connection) holds the pipe
            self.process.stdout.close()


@contextmanager
def serve(name, argv, env, cwd, log=None):
    server = Server(name, argv, env, cwd, log)
    try:
        yield server
    finally:
        server.stop()
