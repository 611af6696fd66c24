"""Instructions per operation of SMS in process, by layer (docs/sms.md, "Cost in process").

    python tools/sms_profile.py [--tests random32,aes-cbc-1k] [--short 500] [--long 2500]

Runs each part under `valgrind --tool=callgrind` twice, SHORT and LONG operations, and
prints (instructions of the long run - the short run's) / (LONG - SHORT): start-up cancels
out and the count does not depend on what else the machine does. The parts, for each test:

    off, full     the test's calls on the client interface (Cryptoki.api) in process, with no
                  SMS flag / the four SMS flags (tools/bench_sms.py's MODES)
    records       the test's records sealed and opened on a channel alone (the record layer)
    primitives    the bare AES-CTR and HMAC-SHA-512 calls of those records (bench-sms' floor)

full - off - records is what the codec, the link and the dispatch add. The HSMs of off and
full are made once, in fresh directories, before anything is measured. One part alone:

    python tools/sms_profile.py --run PART TEST COUNT DATA   (DATA: that HSM's directory)
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sms  # noqa: E402  (tools/ is not a package)

from ptkhsm import constants as C  # noqa: E402
from ptkhsm import mechparams as P  # noqa: E402
from ptkhsm.config import Config  # noqa: E402
from ptkhsm.cryptoki.client import Cryptoki  # noqa: E402
from ptkhsm.sms import channel as ch  # noqa: E402

PARTS = ("off", "full", "records", "primitives")


def _api_loop(data, test):
    """-> one_op() making the test's calls on the client interface of the HSM in `data`."""
    api = Cryptoki(Config({"ET_PTKC_SW_DATAPATH": data, "HOME": data})).api
    s = api.open_session(0, bench_sms.RW)
    api.login(s, C.CKU_USER, bench_sms.PIN)
    if test == "random32":
        return lambda: api.generate_random(s, 32)
    key = api.generate_key(s, P.Mechanism(C.CKM_AES_KEY_GEN, None),
                           [(C.CKA_VALUE_LEN, 32), (C.CKA_ENCRYPT, True), (C.CKA_TOKEN, False)])
    mechanism, block = P.Mechanism(C.CKM_AES_CBC, bytes(16)), bytes(1024)

    def aes_cbc_1k():
        api.encrypt_init(s, mechanism, key)
        api.encrypt(s, block, 1024)
    return aes_cbc_1k


def _records_loop(test):
    """-> one_op() sealing and opening the test's records, requests one way, replies back."""
    client = ch.ClientHandshake()
    server = ch.ServerHandshake(ch.new_identity(), "0", (5, 2, 0), 0)
    finished, hsm = server.confirm(client.finish(server.accept(client.hello())))
    client = client.confirm(finished)
    both = ch.ENCRYPTED | ch.SIGNED
    pairs = [(client, hsm) if i % 2 == 0 else (hsm, client) for i in range(len(bench_sms.record_sizes(test)))]
    payloads = [bytes(n) for n in bench_sms.record_sizes(test)]

    def one_op():
        for (sender, receiver), payload in zip(pairs, payloads):
            receiver.unseal(sender.seal(payload, both))
    return one_op


def run(part, test, count, data):
    if part in ("off", "full"):
        one_op = _api_loop(data, test)
    elif part == "records":
        one_op = _records_loop(test)
    else:
        one_op = bench_sms._primitives(bench_sms.record_sizes(test))
    for _ in range(count):
        one_op()


def instructions(part, test, count, data):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                        __file__, "--run", part, test, str(count), data], check=True, capture_output=True)
        return int(re.search(r"^summary: (\d+)", Path(out).read_text(), re.M).group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default="random32,aes-cbc-1k")
    parser.add_argument("--short", type=int, default=500)
    parser.add_argument("--long", type=int, default=2500)
    parser.add_argument("--run", nargs=4, metavar=("PART", "TEST", "COUNT", "DATA"))
    args = parser.parse_args(argv)
    if args.run:
        part, test, count, data = args.run
        run(part, test, int(count), data)
        return 0
    with tempfile.TemporaryDirectory(prefix="sms-profile-") as tmp:
        data = {mode: os.path.join(tmp, mode) for mode in ("off", "full")}
        for mode, path in data.items():
            bench_sms.hsm_with_flags(path, bench_sms.MODES[mode])
        for test in args.tests.split(","):
            _report(test, {part: (instructions(part, test, args.long, data.get(part, tmp))
                                  - instructions(part, test, args.short, data.get(part, tmp)))
                           / (args.long - args.short) for part in PARTS})
    return 0


def _report(test, per_op):
    rest = per_op["full"] - per_op["off"] - per_op["records"]
    print(f"{test}: off {per_op['off'] / 1e3:.1f}k, full {per_op['full'] / 1e3:.1f}k instructions/op; "
          f"of the difference: primitives {per_op['primitives'] / 1e3:.1f}k, record layer's Python "
          f"{(per_op['records'] - per_op['primitives']) / 1e3:.1f}k, codec, link and dispatch "
          f"{rest / 1e3:.1f}k", flush=True)


if __name__ == "__main__":
    sys.exit(main())
