"""Bounded load on one server over loopback: 16 client processes x 2 threads
sign, encrypt and find for PTKHSM_LOAD_SECONDS (10 in `make test`, 60 in
`make load`). No error, every connection ends (its application and sessions
freed), the workers' RSS stays flat (the slope is printed)."""

import os
import subprocess
import sys
import time
from pathlib import Path


from conftest import MODULE, USER_PIN, init_token
from netserver import Server

CLIENT = Path(__file__).resolve().parent / "load_client.py"
SECONDS = float(os.environ.get("PTKHSM_LOAD_SECONDS", "10"))
PROCESSES, THREADS = 16, 2


def _rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def _slope(samples):
    """Least-squares slope of (t, kB) samples, in kB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / var if var else 0.0


def test_load(tmp_path):
    with Server(tmp_path / "data", "tcp", workers=2, env={**os.environ, "PTKHSM_LOG_LEVEL": "INFO"}) as server:
        env = server.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="load", PKCS11_TOKEN_PIN=USER_PIN)
        init_token(env, label="load")
        setup = subprocess.run([sys.executable, "-c", (
            "import os, pkcs11; from pkcs11 import KeyType\n"
            "t = pkcs11.lib(os.environ['PKCS11_MODULE']).get_token(token_label='load')\n"
            "with t.open(rw=True, user_pin=os.environ['PKCS11_TOKEN_PIN']) as s:\n"
            "    s.generate_key(KeyType.AES, 128, store=True, label='load-aes')\n"
            "    p = s.create_domain_parameters(KeyType.EC, {pkcs11.Attribute.EC_PARAMS:"
            " pkcs11.util.ec.encode_named_curve_parameters('secp256r1')}, local=True)\n"
            "    p.generate_keypair(store=True, label='load-ec')\n")],
            env=env, capture_output=True, text=True, timeout=120)
        assert setup.returncode == 0, setup.stderr
        workers = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        clients = [subprocess.Popen([sys.executable, str(CLIENT), str(SECONDS), str(THREADS)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(PROCESSES)]
        start, samples = time.monotonic(), []
        while any(c.poll() is None for c in clients):
            samples.append((time.monotonic() - start, _rss_kb(workers)))
            time.sleep(0.5)
        outputs = [c.communicate() for c in clients]
        for client, (out, err) in zip(clients, outputs):
            assert client.returncode == 0, out + err[-2000:]
        ops = sum(int(out.split()[-1]) for out, _ in outputs)
        warm = [s for s in samples if s[0] > min(3.0, SECONDS / 3)] or samples
        slope = _slope(warm)
        print(f"\nload: {PROCESSES}x{THREADS} for {SECONDS:.0f} s: {ops} ops ({ops / SECONDS:.0f}/s), "
              f"workers' RSS {warm[0][1] / 1024:.1f} -> {warm[-1][1] / 1024:.1f} MB, slope {slope:.0f} kB/min")
        time.sleep(1)
        log = server.stderr()
        opened, ended = log.count(" (worker "), log.count(" ended: ")
        assert opened >= PROCESSES and ended == opened, (opened, ended)
        assert server.alive()
        # flat: less than 8 MB growth over the warm part, whatever its length
        assert warm[-1][1] - warm[0][1] < 8 * 1024, samples
