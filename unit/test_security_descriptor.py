"""The parser and SDDL rendering, against descriptors Samba built from SDDL (unit/data/descriptors.json)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exchange_compliance.judge.security_descriptor import (
    SE_DACL_AUTO_INHERITED,
    SE_DACL_PRESENT,
    SE_DACL_PROTECTED,
    SE_SACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    Acl,
    DescriptorError,
    SecurityDescriptor,
    parse_descriptor,
)

DATA_DIR = Path(__file__).parent / "data"
FIXTURE = json.loads((DATA_DIR / "descriptors.json").read_text())
CASES = FIXTURE["cases"]
DOMAIN = FIXTURE["domain_sid"]
SIDS = FIXTURE["sids"]
TS = FIXTURE["guids"]["TS"]
SYSTEM_PYTHON = "/usr/bin/python3"


def raw(name: str) -> bytes:
    return bytes.fromhex(CASES[name]["hex"])


def parsed(name: str) -> SecurityDescriptor:
    return parse_descriptor(raw(name), what=name)


def samba_available() -> bool:
    if not shutil.which(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import samba.dcerpc.security"], capture_output=True)
    return probe.returncode == 0


needs_samba = pytest.mark.skipif(not samba_available(), reason="no Samba python bindings in /usr/bin/python3")


# --- Against Samba's own reading of the same bytes ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if "patch" not in c))
def test_sddl_matches_samba(name: str) -> None:
    # Samba pads hex masks to 8 digits; Windows (and this module) do not.
    expected = re.sub(r"0x0+([0-9a-f])", r"0x\1", CASES[name]["samba_sddl"])
    assert parsed(name).to_sddl(DOMAIN) == expected


def test_server_descriptor_fields() -> None:
    sd = parsed("server_default")
    assert sd.revision == 1
    assert sd.control == SE_SELF_RELATIVE | SE_DACL_PRESENT | SE_DACL_AUTO_INHERITED
    assert "SE_DACL_AUTO_INHERITED" in sd.control_names and not sd.dacl_protected
    assert sd.owner == sd.group == f"{DOMAIN}-512"
    assert sd.dacl is not None and sd.sacl is None
    deny = sd.dacl.aces[2]
    assert (deny.type, deny.flags, deny.mask, deny.sid) == (6, 0x12, 0x100, f"{DOMAIN}-519")
    assert deny.object_type == TS and deny.inherited_object_type is None
    assert deny.inherited and not deny.inherit_only and deny.is_object
    assert deny.to_sddl(DOMAIN) == f"(OD;CIID;CR;{TS};;EA)"
    assert deny.to_sddl() == f"(OD;CIID;CR;{TS};;{DOMAIN}-519)"  # no domain SID: plain SIDs


def test_guid_is_mixed_endian() -> None:
    # 06386f89-befb-4e48-baa1-559fd9221f78 is stored as 89 6f 38 06 | fb be | 48 4e | ba a1 55 9f d9 22 1f 78.
    assert "896f3806fbbe484ebaa1559fd9221f78" in CASES["deny_before_allow"]["hex"]
    assert parsed("deny_before_allow").dacl.aces[0].object_type == TS


def test_protected_dacl() -> None:
    sd = parsed("server_protected")
    assert sd.control & SE_DACL_PROTECTED and sd.dacl_protected
    assert sd.to_sddl(DOMAIN).startswith("O:DAG:DAD:P(")


def test_inherited_object_type() -> None:
    io_ace, ace = parsed("inherited_object_type").dacl.aces
    assert io_ace.inherit_only and not ace.inherit_only
    assert ace.inherited_object_type == FIXTURE["guids"]["CLS"] and ace.object_type == TS


def test_null_and_empty_dacls() -> None:
    absent, null, empty = parsed("null_dacl"), parsed("null_dacl_present"), parsed("empty_dacl")
    assert absent.dacl is None and not absent.control & SE_DACL_PRESENT
    assert null.dacl is None and null.control & SE_DACL_PRESENT
    assert null.to_sddl() == "O:SYG:SYD:NO_ACCESS_CONTROL" and absent.to_sddl() == "O:SYG:SY"
    assert empty.dacl is not None and empty.dacl.aces == ()


def test_audit_aces_and_sacl() -> None:
    sd = parsed("audit_aces")
    assert sd.control & SE_SACL_PRESENT and sd.sacl is not None
    assert [a.ace_type.name for a in sd.dacl.aces] == ["SYSTEM_AUDIT", "SYSTEM_AUDIT_OBJECT", "ACCESS_ALLOWED"]
    assert sd.sacl.aces[1].flags == 0xC0 and sd.sacl.aces[1].to_sddl().startswith("(OU;SAFA;CR;")


def test_callback_aces_are_recognised() -> None:
    aces = parsed("callbacks").dacl.aces
    assert [a.type for a in aces] == [9, 10, 11, 12, 13, 0]
    assert [a.is_callback for a in aces] == [True] * 5 + [False]
    assert aces[0].application_data == bytes.fromhex("6172747800000000") and aces[0].sid == SIDS["ES"]
    assert aces[2].object_type == TS and aces[3].object_type == TS  # object layouts keep their GUIDs
    assert aces[0].to_sddl(DOMAIN).endswith(";[6172747800000000])")
    assert aces[3].to_sddl().startswith("(0x0c;;CR;")  # SDDL has no alias for type 12


def test_unknown_ace_type_kept_raw() -> None:
    unknown, known = parsed("unknown_type").dacl.aces
    assert unknown.type == 0x30 and unknown.mask is None and unknown.sid is None
    assert unknown.application_data == bytes.fromhex("10000000010100000000000100000000")
    assert unknown.ace_type.kind == "other" and known.sid == SIDS["ES"]


def test_sid_forms_and_hex_mask() -> None:
    sd = parsed("sid_forms")
    assert sd.owner == "S-1-5-21-1-2-3-4294967295" and sd.group == "S-1-16-12288"
    assert sd.dacl.aces[0].to_sddl() == "(A;;0x1200a9;;;S-1-5-80-1-2-3-4-5)"


def test_large_identifier_authority_is_hex() -> None:
    # MS-DTYP 2.4.2.1: an authority of 2**32 or more is written as 0x followed by 12 hex digits.
    sid = bytes([1, 1]) + (2**40).to_bytes(6, "big") + struct.pack("<I", 7)
    header = struct.pack("<BBHIIII", 1, 0, SE_SELF_RELATIVE, 20, 0, 0, 0)
    assert parse_descriptor(header + sid).owner == "S-1-0x010000000000-7"


def test_parse_is_cached_by_content() -> None:
    assert parse_descriptor(raw("server_default")) is parse_descriptor(bytearray(raw("server_default")))


# --- Malformed bytes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["server_default", "callbacks", "audit_aces", "sid_forms"])
def test_every_truncation_is_a_descriptor_error(name: str) -> None:
    data = raw(name)
    for length in range(len(data)):
        with pytest.raises(DescriptorError) as info:
            parse_descriptor(data[:length], what="CN=EX01,CN=Servers")
        assert str(info.value).startswith("CN=EX01,CN=Servers: malformed security descriptor: ")


def _patched(name: str, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(raw(name))
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _dacl_offset(name: str) -> int:
    return struct.unpack_from("<I", raw(name), 16)[0]


BAD = {
    "revision 2": lambda: _patched("deny_before_allow", 0, "<B", 2),
    "SE_SELF_RELATIVE": lambda: _patched("deny_before_allow", 2, "<H", SE_DACL_PRESENT),
    "outside the": lambda: _patched("server_default", 16, "<I", 5000),  # DACL offset past the end
    "points into the 20-byte header": lambda: _patched("server_default", 16, "<I", 8),
    "owner SID at offset": lambda: _patched("server_default", 4, "<I", len(raw("server_default")) - 4),
    "claims 90 ACEs": lambda: _patched("deny_before_allow", _dacl_offset("deny_before_allow") + 4, "<H", 90),
    "claims 0 bytes": lambda: _patched("deny_before_allow", _dacl_offset("deny_before_allow") + 10, "<H", 0),
    "claims 400 bytes": lambda: _patched("deny_before_allow", _dacl_offset("deny_before_allow") + 2, "<H", 400),
    "revision 9, expected 2 or 4": lambda: _patched("deny_before_allow", _dacl_offset("deny_before_allow"), "<B", 9),
    "sub-authorities (at most 15)": lambda: _patched("sid_forms", 21, "<B", 200),
    "ACE #0: truncated inside an object type GUID": lambda: _patched(
        "deny_before_allow", _dacl_offset("deny_before_allow") + 10, "<H", 20
    ),
}


@pytest.mark.parametrize("problem", sorted(BAD))
def test_bad_structure_names_the_problem(problem: str) -> None:
    with pytest.raises(DescriptorError) as info:
        parse_descriptor(BAD[problem](), what="CN=EX05,CN=Servers")
    assert info.value.what == "CN=EX05,CN=Servers"
    assert problem in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(DescriptorError):
        parse_descriptor(data, what="fuzz")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.data())
def test_mutated_descriptors_never_escape_as_other_errors(name: str, data: st.DataObject) -> None:
    buf = bytearray(raw(name))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    try:
        sd = parse_descriptor(bytes(buf), what="fuzz")
    except DescriptorError:
        return
    sd.to_sddl(DOMAIN)  # whatever parses also renders


# --- Live Samba: regenerate the fixture, and round-trip parse -> SDDL -> Samba -> parse --------------------------


@needs_samba
def test_fixture_matches_live_samba() -> None:
    out = subprocess.run(
        [SYSTEM_PYTHON, str(DATA_DIR / "make_descriptors.py"), "--stdout"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == FIXTURE


@pytest.fixture(scope="module")
def samba_bytes() -> Iterator[Callable[[str], bytes]]:
    server = subprocess.Popen(
        [SYSTEM_PYTHON, str(DATA_DIR / "make_descriptors.py"), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None

    def convert(sddl: str) -> bytes:
        server.stdin.write(sddl + "\n")
        server.stdin.flush()
        answer = server.stdout.readline().strip()
        assert not answer.startswith("ERR"), f"Samba refused {sddl}: {answer}"
        return bytes.fromhex(answer)

    yield convert
    server.stdin.close()
    server.wait(timeout=10)


@needs_samba
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if "patch" not in c))
def test_recorded_cases_round_trip(name: str, samba_bytes: Callable[[str], bytes]) -> None:
    assert samba_bytes(parsed(name).to_sddl(DOMAIN)) == raw(name)


SID_POOL = ["S-1-1-0", "S-1-5-11", "S-1-5-18", "S-1-5-32-544", "S-1-5-15", f"{DOMAIN}-512", f"{DOMAIN}-519"]
sids = st.one_of(
    st.sampled_from(SID_POOL),
    st.builds(
        lambda a, b, rid: f"S-1-5-21-{a}-{b}-7-{rid}",
        st.integers(0, 2**32 - 1),
        st.integers(1, 9),
        st.integers(0, 2**32 - 1),
    ),
)
guids = st.one_of(st.none(), st.uuids().map(str))


@st.composite
def aces(draw: st.DrawFn) -> Ace:
    ace_type = draw(st.sampled_from([0, 1, 2, 5, 6, 7]))
    flags = draw(
        st.sampled_from([0, 0x01, 0x02, 0x04, 0x08, 0x10, 0x40, 0x80]) | st.integers(0, 0xFF).map(lambda f: f & 0xDF)
    )
    mask = draw(st.integers(1, 2**32 - 1) | st.sampled_from([0x100, 0x10000000, 0xF01FF, 0x20094]))
    obj = ace_type in (5, 6, 7)
    return Ace(ace_type, flags, mask, draw(sids), draw(guids) if obj else None, draw(guids) if obj else None)


@st.composite
def descriptors(draw: st.DrawFn) -> SecurityDescriptor:
    control = SE_SELF_RELATIVE
    dacl = sacl = None
    if draw(st.booleans()):
        control |= SE_DACL_PRESENT | draw(st.sampled_from([0, 0x1000, 0x400, 0x100, 0x1500]))
        dacl = Acl(4, tuple(draw(st.lists(aces(), max_size=6))))
    if draw(st.booleans()):
        control |= SE_SACL_PRESENT | draw(st.sampled_from([0, 0x2000, 0x800]))
        sacl = Acl(4, tuple(draw(st.lists(aces(), max_size=3))))
    return SecurityDescriptor(1, control, draw(st.none() | sids), draw(st.none() | sids), dacl, sacl)


@needs_samba
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sd=descriptors())
def test_render_then_samba_then_parse_is_identity(sd: SecurityDescriptor, samba_bytes: Callable[[str], bytes]) -> None:
    # Samba 4.17 cannot parse ACL flags directly followed by the next section ("D:PS:"); Windows can.
    assume(not (sd.dacl is not None and not sd.dacl.aces and sd.control & 0x1500 and sd.sacl is not None))
    assert parse_descriptor(samba_bytes(sd.to_sddl(DOMAIN))) == sd
