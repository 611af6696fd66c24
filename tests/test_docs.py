"""The docs say what the code does: configuration items, unsupported functions."""

import re

from conftest import ROOT

from ptkhsm.config import ITEMS


def test_readme_lists_every_configuration_item():
    readme = (ROOT / "README.md").read_text()
    for name, item in ITEMS.items():
        assert f"`{name}`" in readme, name


def test_unsupported_functions_documented():
    source = (ROOT / "ptkhsm" / "abi" / "functions.py").read_text()
    block = source[source.index("_UNSUPPORTED = ("):]
    block = block[:block.index(")")]
    unsupported = set(re.findall(r'"(C_\w+)"', block))
    assert len(unsupported) > 20, "the _UNSUPPORTED tuple of functions.py was not found"
    doc = (ROOT / "docs" / "functions.md").read_text()
    section = doc[doc.index("Return CKR_FUNCTION_NOT_SUPPORTED"):]
    for name in unsupported - {n for n in unsupported if n.startswith(("C_Message", "C_EncryptMessage",
                                                                      "C_DecryptMessage", "C_SignMessage",
                                                                      "C_VerifyMessage"))}:
        assert name in section, name


def test_mechanism_table_current():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_mechanism_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (ROOT / "docs" / "mechanisms.md").read_text() == gen.render(), \
        "docs/mechanisms.md is stale: run python tools/gen_mechanism_table.py"


def test_security_claims_name_tests_that_exist():
    """docs/security.md backs each claim with a test: every test it names exists."""
    doc = (ROOT / "docs" / "security.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.(?:py|c|txt|supp))((?:::\w+)?)`", doc)
    assert len(named) > 20
    last_file = None
    for path, function in named:
        source = (ROOT / path).read_text()
        last_file = path
        if function:
            assert f"def {function[2:]}(" in source, f"{path}{function}"
    for function in re.findall(r"`::(\w+)`", doc):  # a name after a file named before it
        assert any(f"def {function}(" in p.read_text() for p in (ROOT / "tests").rglob("test_*.py")), function
    assert last_file
