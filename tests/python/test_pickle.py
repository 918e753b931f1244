"""The pickle machine against Python's own pickle: for plain data written at
every protocol, the inert tree jaxport builds equals what pickle.loads
returns, once the few records that plain data becomes at old protocols
(bytes through _codecs.encode, sets through builtins.set) are read back the
way pickle would. Hostile pickles are reported, never run."""

import _compat_pickle
import math
import os
import pickle
import subprocess
import sys
import textwrap

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from jaxport import _core, errors

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Lone surrogates too: pickle writes them with "surrogatepass" and reads them back.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
                    st.text(alphabet=st.characters(min_codepoint=0xd7f0, max_codepoint=0xe010)),
                    st.binary())
KEYS = st.one_of(st.text(max_size=8), INT64)


def plain(scalars):
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(KEYS, inner, max_size=4),
        st.frozensets(INT64, max_size=3)), max_leaves=20)


def readback(v):
    """What pickle.loads makes of the records plain data becomes."""
    if isinstance(v, tuple) and v and v[0] in ("call", "object"):
        _, fn, args, _, _, _, _ = v
        if fn == ("global", "_codecs", "encode"):
            return readback(args[0]).encode(args[1])
        if fn in (("global", "builtins", "set"), ("global", "__builtin__", "set")):
            return set(readback(args[0])) if args else set()
        if fn in (("global", "builtins", "frozenset"), ("global", "__builtin__", "frozenset")):
            return frozenset(readback(args[0])) if args else frozenset()
        if fn in (("global", "builtins", "bytes"), ("global", "__builtin__", "bytes")):
            return bytes(readback(args[0])) if args else b""
    if isinstance(v, list):
        return [readback(x) for x in v]
    if isinstance(v, tuple):
        return tuple(readback(x) for x in v)
    if isinstance(v, dict):
        return {readback(k): readback(x) for k, x in v.items()}
    if isinstance(v, frozenset):
        return frozenset(readback(x) for x in v)
    return v


def same(a, b):
    """Equality that also tells float from int and -0.0 from 0.0."""
    if type(a) is not type(b) and not (isinstance(a, (set, frozenset)) and isinstance(b, (set, frozenset))):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=150, deadline=None)
@given(obj=plain(SCALARS), protocol=st.integers(min_value=2, max_value=5))
def test_plain_data_at_binary_protocols(obj, protocol):
    tree, findings = _core.pickle_tree(pickle.dumps(obj, protocol=protocol))
    assert same(readback(tree), pickle.loads(pickle.dumps(obj, protocol=protocol)))
    assert findings == []


@settings(max_examples=100, deadline=None)
@given(obj=plain(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                           st.text(alphabet=st.characters(blacklist_categories=("Cs",))))),
       protocol=st.integers(min_value=0, max_value=1))
def test_plain_data_at_text_protocols(obj, protocol):
    data = pickle.dumps(obj, protocol=protocol)
    tree, _ = _core.pickle_tree(data)
    assert same(readback(tree), pickle.loads(data))


def test_nan_and_big_ints():
    for protocol in range(6):
        tree, _ = _core.pickle_tree(pickle.dumps([float("nan"), -(2**63)], protocol=protocol))
        assert math.isnan(tree[0]) and tree[1] == -(2**63)
    for protocol in range(6):  # LONG text at protocols 0 and 1, LONG1 after
        big = [2**64, -(2**200), 2**63, 2**100, -(2**63) - 1, -(2**64), 10**4300 - 1]
        assert _core.pickle_tree(pickle.dumps(big, protocol=protocol))[0] == big


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", range(6))
def test_hostile_pickle_reported_not_run(tmp_path, protocol):
    marker = tmp_path / "ran"
    tree, findings = _core.pickle_tree(pickle.dumps({"w": Evil(marker)}, protocol=protocol))
    assert not marker.exists()
    assert [f[:3] for f in findings] == [("denied", "posix", "system")]
    assert tree["w"][0] == "call" and tree["w"][1] == ("global", "posix", "system")


MEMO_KEYS = st.one_of(st.integers(0, 70), st.integers(0, 2**22 - 1),
                      st.integers(2**22 - 70, 2**22 - 1))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "memoize", "get"]), MEMO_KEYS), max_size=80))
def test_memo_like_pickle_loads(ops):
    """PUTs under any keys, MEMOIZE (which keys by the count of entries) and
    GETs read back as pickle.loads reads them, or refused by both. Python's
    own unpickler keeps the memo in a dict; the C one in an array as long as
    the largest key, slow for this test."""
    out = [b"("]
    for i, (op, key) in enumerate(ops):
        k = key.to_bytes(4, "little")
        if op == "get":
            out.append(b"j" + k)
        else:
            out.append(b"J" + i.to_bytes(4, "little") + (b"r" + k if op == "put" else b"\x94"))
    data = b"".join(out) + b"l."
    want, got = loads_or_refusal(data, pickle._loads), tree_or_refusal(data)
    assert (want is None) == (got is None), (want, got)
    if want is not None:
        assert got[1] == want[1]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_memo_grows_with_puts_not_with_keys():
    """A PUT under the largest memo key must not allocate a table as large
    as the key: in a fresh process whose address space may grow by only
    16 MiB, PUT and GET of the largest keys still load (a dense memo would
    ask for 32 MiB and fail)."""
    code = textwrap.dedent("""
        import os, resource
        from jaxport import _core
        _core.pickle_tree(b"K\\x01r\\x00\\x00\\x00\\x00.")
        size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + (16 << 20), resource.RLIM_INFINITY))
        for key in range(0x3FFF00, 0x400000):
            k = key.to_bytes(4, "little")
            assert _core.pickle_tree(b"K\\x01r" + k + b"0j" + k + b".") == (1, [])
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_python2_names_mapped_as_pickle_loads_maps_them():
    """Below protocol 3 the records carry the names pickle.loads would look
    up (_compat_pickle's tables, the real ones); from protocol 3 on, the
    names as written."""
    pairs = list(_compat_pickle.NAME_MAPPING) + [(m, "anything") for m in _compat_pickle.IMPORT_MAPPING]
    for module, name in pairs:
        want = _compat_pickle.NAME_MAPPING.get((module, name))
        want = want or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        glob = b"c%s\n%s\n." % (module.encode(), name.encode())
        assert _core.pickle_tree(glob)[0] == ("global", *want)
        assert _core.pickle_tree(b"\x80\x02" + glob)[0] == ("global", *want)
        assert _core.pickle_tree(b"\x80\x03" + glob)[0] == ("global", module, name)


def test_python2_names_judged_as_mapped():
    # Python 3 writes sys.intern as __builtin__.intern below protocol 3.
    for protocol in range(3):
        data = pickle.dumps(sys.intern, protocol=protocol)
        assert b"__builtin__" in data
        tree, findings = _core.pickle_tree(data)
        assert tree == ("global", "sys", "intern")
        assert [f[:3] for f in findings] == [("denied", "sys", "intern")]
    # The same names from protocol 3 on are not mapped, but still denied.
    tree, findings = _core.pickle_tree(b"\x80\x03c__builtin__\neval\n)R.")
    assert [f[:3] for f in findings] == [("denied", "__builtin__", "eval")]


class Plain:
    def __init__(self):
        self.x = 1


class Outer:
    class Inner:
        pass


@pytest.mark.parametrize("protocol", [0, 1])
def test_copy_reg_reconstructor_makes_an_instance(protocol):
    """Protocols 0 and 1 make plain instances through copy_reg._reconstructor:
    an instance of the class, reported as a class, not as a call."""
    data = pickle.dumps(Plain(), protocol=protocol)
    assert b"copy_reg" in data
    tree, findings = _core.pickle_tree(data)
    assert tree[0] == "object" and tree[1] == ("global", Plain.__module__, "Plain")
    assert tree[4] == {"x": 1}
    assert [f[:3] for f in findings] == [("class", Plain.__module__, "Plain")]


def test_dotted_names():
    # A hand-made protocol 4 pickle calling torch.hub.load through a dotted name.
    tree, findings = _core.pickle_tree(b"\x80\x04\x8c\x05torch\x8c\x08hub.load\x93)R.")
    assert [f[:3] for f in findings] == [("denied", "torch", "hub.load")]
    # A nested class, as pickle writes it: an unknown class, not denied.
    tree, findings = _core.pickle_tree(pickle.dumps(Outer.Inner(), protocol=4))
    assert tree[0] == "object" and tree[1] == ("global", Outer.__module__, "Outer.Inner")
    assert [f[:3] for f in findings] == [("class", Outer.__module__, "Outer.Inner")]


def test_malformed_raises_with_offset():
    with pytest.raises(errors.TruncatedError) as info:
        _core.pickle_tree(pickle.dumps({"a": "b" * 100}, protocol=4)[:40])
    assert info.value.offset is not None and info.value.offset < 40
    with pytest.raises(RecursionError):
        _core.pickle_tree(b"]q\x00h\x00a.")  # a list that contains itself


def loads_or_refusal(data, loads=pickle.loads):
    """What pickle.loads makes of data, or None when it refuses it."""
    try:
        return ("value", loads(data))
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None


def tree_or_refusal(data):
    """What the pickle machine makes of data, or None when it refuses it."""
    try:
        return ("value", readback(_core.pickle_tree(data)[0]))
    except errors.JaxportError:
        return None


# Hand-written pickles where the machine must agree with pickle.loads: the
# same value, or a refusal from both.
AGREE = {
    "POP of a MARK": b"K\x01(0.",
    "POP of a MARK inside a MARK": b"(K\x01(0.",
    "POP of a MARK, then STOP": b"(0.",
    "POP of a value above a MARK": b"K\x01(K\x020.",
    "STOP above an open MARK": b"K\x01(K\x02.",
    "STOP right after MARK": b"K\x01(.",
    "UNICODE: even backslashes escape nothing": b"V\\\\u0041\n.",
    "UNICODE: odd backslashes start an escape": b"V\\\\\\u0041\n.",
    "UNICODE: truncated \\u": b"Vab\\u004\n.",
    "UNICODE: truncated \\U": b"Vab\\U0001F60\n.",
    "UNICODE: \\U beyond U+10FFFF": b"V\\U00110000\n.",
    "UNICODE: Latin-1 bytes": b"Vcaf\xe9\\\n.",
    "BINUNICODE: encoded lone surrogate": b"X\x03\x00\x00\x00\xed\xa0\x80.",
    "BINUNICODE: U+10FFFF": b"X\x04\x00\x00\x00\xf4\x8f\xbf\xbf.",
    "BINUNICODE: beyond U+10FFFF": b"X\x04\x00\x00\x00\xf4\x90\x80\x80.",
    "BINUNICODE: truncated sequence": b"X\x01\x00\x00\x00\xc3.",
    "SHORT_BINUNICODE: overlong NUL": b"\x8c\x02\xc0\x80.",
    "SHORT_BINUNICODE: overlong 3 bytes": b"\x8c\x03\xe0\x80\xaf.",
    "SHORT_BINUNICODE: stray continuation": b"\x8c\x02a\x80.",
    "BINUNICODE8: 5-byte form": b"\x8d\x05" + bytes(7) + b"\xf8\x88\x80\x80\x80.",
    "GLOBAL: surrogate in the name": b"cbuiltins\nse\xed\xa0\x80t\n)R.",
    "GLOBAL: overlong in the module": b"c\xc0\x80\nx\n.",
    "INST: name not ASCII": b"(ibuiltin\xc3\xa9s\nset\n.",
    "INT beyond 64 bits": b"I123456789012345678901234567890\n.",
    "LONG beyond 64 bits": b"L-123456789012345678901234567890L\n.",
    "LONG of as many digits as Python converts": b"L" + b"7" * 4300 + b"L\n.",
    "LONG of more digits than Python converts": b"L" + b"7" * 4301 + b"L\n.",
    "LONG with a leading zero": b"L010\n.",
}


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=-(2**300), max_value=2**300) | st.integers())
def test_text_ints_read_as_pickle_loads_reads_them(value):
    for data in (b"I%d\n." % value, b"L%dL\n." % value, pickle.dumps(value, protocol=0)):
        assert tree_or_refusal(data) == ("value", pickle.loads(data))


@settings(max_examples=300, deadline=None)
@given(text=st.binary(max_size=8))
def test_binunicode_decodes_like_pickle_loads(text):
    for data in (b"X" + len(text).to_bytes(4, "little") + text + b".",
                 b"\x8c" + bytes([len(text)]) + text + b"."):
        want, got = loads_or_refusal(data), tree_or_refusal(data)
        assert (want is None) == (got is None), (data, want, got)
        if want is not None:
            assert got[1] == want[1]


@settings(max_examples=300, deadline=None)
@given(line=st.lists(st.sampled_from([b"\\", b"u", b"U", b"0", b"1", b"f", b"F", b"d8",
                                      b"00", b"x", b"g", b"\xe9", b" "]),
                     max_size=24).map(b"".join))
def test_unicode_opcode_is_raw_unicode_escape(line):
    data = b"V" + line + b"\n."
    want, got = loads_or_refusal(data), tree_or_refusal(data)
    assert (want is None) == (got is None), (want, got)
    if want is not None:
        assert got[1] == want[1]


@pytest.mark.parametrize("name", sorted(AGREE))
def test_agrees_with_pickle_loads(name):
    data = AGREE[name]
    want, got = loads_or_refusal(data), tree_or_refusal(data)
    assert (want is None) == (got is None), (want, got)
    if want is not None:
        assert same(got[1], want[1])
