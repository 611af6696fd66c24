"""ObjectTable's index gives C_FindObjectsInit exactly what a scan of the table would."""

import random

import pytest

from ptkhsm import constants as C
from ptkhsm.hsm.objects import Obj, ObjectTable, matches

LABELS = [b"a", b"b", b"c", b""]
IDS = [b"\x01", b"\x02"]


def _attrs(rng):
    attrs = {C.CKA_CLASS: rng.choice([C.CKO_DATA, C.CKO_SECRET_KEY])}
    if rng.random() < 0.8:
        attrs[C.CKA_LABEL] = rng.choice(LABELS)
    if rng.random() < 0.5:
        attrs[C.CKA_ID] = rng.choice(IDS)
    return attrs


def _scan(table, template):
    return [o.handle for o in table.values() if matches(o.attrs, template)]


def _indexed(table, template):
    return [o.handle for o in table.candidates(template) if matches(o.attrs, template)]



def test_random_mutations_agree_with_a_scan():
    rng = random.Random(9)
    table = ObjectTable()
    handles = iter(range(1, 100000))
    templates = ([[(C.CKA_LABEL, label)] for label in LABELS + [b"none"]]
                 + [[(C.CKA_ID, i)] for i in IDS]
                 + [[(C.CKA_CLASS, C.CKO_DATA), (C.CKA_LABEL, b"a"), (C.CKA_ID, b"\x01")], [], [(C.CKA_LABEL, [])]])
    for step in range(3000):
        action = rng.random()
        if action < 0.45 or not table:
            handle = next(handles)
            table[handle] = Obj(handle, _attrs(rng), 0)
        elif action < 0.6:
            handle = rng.choice(list(table))
            table[handle] = Obj(handle, _attrs(rng), 0)  # replaced in place
        elif action < 0.75:
            rng.choice(list(table.values())).replace_attrs(_attrs(rng))
        elif action < 0.85:
            table.pop(rng.choice(list(table)))
        elif action < 0.95:
            del table[rng.choice(list(table))]
        elif action < 0.97:
            table.clear()
        else:  # re-insert a dropped object under its old handle (token reload after login)
            handle = rng.choice(list(table))
            obj = table.pop(handle)
            table[handle] = obj
        if step % 10 == 0:
            for template in templates:
                assert _indexed(table, template) == _scan(table, template), template


def test_removed_objects_leave_the_index():
    table = ObjectTable()
    obj = Obj(1, {C.CKA_LABEL: b"x"}, 0)
    table[1] = obj
    table.pop(1)
    obj.replace_attrs({C.CKA_LABEL: b"y"})   # no longer in any table: nothing to re-index
    assert table.candidates([(C.CKA_LABEL, b"x")]) == []
    assert table.candidates([(C.CKA_LABEL, b"y")]) == []
    assert table.pop(1, None) is None


def test_bulk_mutations_are_refused():
    table = ObjectTable()
    with pytest.raises(TypeError):
        table.update({1: Obj(1, {}, 0)})
    with pytest.raises(TypeError):
        table.setdefault(1, Obj(1, {}, 0))
