"""Dependencies point down the layers of DESIGN.md; a walk over the imports keeps it so."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ptkhsm"


def imports_of(path):
    """-> (module name, absolute names it imports)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]
    if parts[-1] == "__init__":
        parts = package
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
                names.add(target)
                names.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return ".".join(parts), names


def modules():
    return [imports_of(p) for p in PACKAGE.rglob("*.py")]


def test_only_abi_knows_cffi():
    for module, names in modules():
        if not module.startswith("ptkhsm.abi"):
            assert not any(n.startswith(("cffi", "_ptkhsm_shim")) for n in names), module


def test_hsm_never_reaches_up():
    for module, names in modules():
        if module.startswith("ptkhsm.hsm"):
            bad = [n for n in names if n.startswith(("ptkhsm.abi", "ptkhsm.cryptoki", "ptkhsm.exttoken", "ptkhsm.cli",
                                                     "ptkhsm.transport"))]
            assert not bad, (module, bad)


def test_transport_sits_between_client_and_hsm():
    for module, names in modules():
        if module.startswith("ptkhsm.transport"):
            bad = [n for n in names if n.startswith(("ptkhsm.abi", "ptkhsm.cryptoki", "ptkhsm.exttoken", "ptkhsm.cli"))]
            assert not bad, (module, bad)


def test_mechanisms_never_see_store_or_sessions():
    for module, names in modules():
        if module.startswith("ptkhsm.hsm.mechanisms"):
            bad = [n for n in names if n.startswith(("ptkhsm.hsm.store", "ptkhsm.hsm.session", "ptkhsm.hsm.core",
                                                     "ptkhsm.hsm.token"))]
            assert not bad, (module, bad)


def test_leaf_modules_import_nothing_above():
    leaves = {"ptkhsm.constants", "ptkhsm.errors", "ptkhsm.schema", "ptkhsm.config", "ptkhsm.log",
              "ptkhsm.mechparams", "ptkhsm.calls", "ptkhsm.wire", "ptkhsm.gate", "ptkhsm.ffdh"}
    for module, names in modules():
        if module in leaves:
            inner = [n for n in names if n.startswith("ptkhsm.")
                     and not any(n == leaf or n.startswith(leaf + ".") for leaf in leaves)]
            assert not inner, (module, inner)


def test_exttoken_uses_only_the_client_interface():
    """ExtToken stacks on the lower api (docs/seams.md): it never reaches into the HSM, its
    store or the ABI, so it works the same over the network transport."""
    for module, names in modules():
        if module.startswith("ptkhsm.exttoken"):
            bad = [n for n in names if n.startswith(("ptkhsm.hsm", "ptkhsm.abi", "ptkhsm.cryptoki", "cffi"))]
            assert not bad, (module, bad)


def test_sms_is_shared_by_client_and_hsm_and_imports_neither():
    for module, names in modules():
        if module.startswith("ptkhsm.sms"):
            inner = [n for n in names if n.startswith("ptkhsm.") and not n.startswith(
                ("ptkhsm.sms", "ptkhsm.constants", "ptkhsm.errors", "ptkhsm.ffdh"))]
            assert not inner, (module, inner)


def test_asn1crypto_is_imported_at_first_use_only(tmp_path):
    """Importing asn1crypto was 20 ms of a cold C_Initialize (ptkhsm/hsm/mechanisms/der.py):
    an HSM started in a fresh interpreter has not imported it, and an EC key's point needs it."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from ptkhsm.cryptoki.client import Cryptoki\n"
              "from ptkhsm.exttoken import stack\n"
              "stack(Cryptoki())\n"
              "print('asn1crypto' in sys.modules)\n"
              "from ptkhsm.hsm.mechanisms import ec\n"
              "ec.der_octet_string(b'point')\n"
              "print('asn1crypto' in sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ET_PTKC_SW_DATAPATH": str(tmp_path / "data"),
           "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
