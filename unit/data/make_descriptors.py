"""Record security descriptor bytes made by Samba's own SDDL conversion, so the unit tests need no Samba.

Run with the system python, which has the Samba bindings (Debian's python3-samba):

    /usr/bin/python3 unit/data/make_descriptors.py            # rewrite unit/data/descriptors.json
    /usr/bin/python3 unit/data/make_descriptors.py --stdout   # print it (the live test compares the two)
    /usr/bin/python3 unit/data/make_descriptors.py --serve    # one SDDL per stdin line -> hex or "ERR <why>"

Samba 4.17's SDDL has no callback ACE types and cannot write a NULL DACL, so those cases start from Samba's bytes
and are patched here ("patch" in the JSON says how): ACE type bytes replaced (callback layouts are the plain or
object layouts plus trailing application data), application data appended with AceSize/AclSize fixed, or
SE_DACL_PRESENT set with a zero DACL offset. This file deliberately does not import the project's parser.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"
SIDS = {
    "ES": f"{DOMAIN_SID}-1117",  # Exchange Servers
    "ETS": f"{DOMAIN_SID}-1118",  # Exchange Trusted Subsystem
    "OM": f"{DOMAIN_SID}-1104",  # Organization Management
    "SOT": f"{DOMAIN_SID}-1200",  # Server Operators Team (KB 2898571's nesting)
    "EX02": f"{DOMAIN_SID}-1302",
    # A child domain of the forest (unit/factories.py forest_directory): a domain-local group there.
    "CDL": "S-1-5-21-1111111111-2222222222-3333333333-3001",
}
GUIDS = {
    "TS": "06386f89-befb-4e48-baa1-559fd9221f78",  # ms-Exch-EPI-Token-Serialization
    "IMP": "8db0795c-df3a-4aca-a97d-100162998dfa",  # ms-Exch-EPI-Impersonation
    "CLS": "01a9aa9c-a2ee-11d1-a3d9-00c04fc3fec4",  # an object class GUID, for inherited object types
    "SRV": "01a9aa9c-a981-11d2-a9ff-00c04f8eedd8",  # msExchExchangeServer's schemaIDGUID
}
# Setup's ACEs on the organization container (EXCHANGE_FACTS.md §2), and the same inherited by a server object.
ORG_DENIES = "".join(f"(OD;CI;CR;{{{r}}};;{t})" for r in ("TS", "IMP") for t in ("EA", "DA", "SA", "{OM}"))
ORG_ALLOWS = "(A;CI;CR;;;{ES})(A;CI;CR;;;SY)(A;CI;RPLCLORC;;;AU)"
INHERITED = (ORG_DENIES + ORG_ALLOWS).replace(";CI;", ";CIID;")
EXPLICIT = "(A;;RPLCLORC;;;AU)(A;;CCDCLCSWRPWPDTLOSDRCWDWO;;;SY)"

CASES: dict[str, dict] = {
    "org_default": {"sddl": "O:DAG:DAD:PAI" + ORG_DENIES + ORG_ALLOWS},
    "server_default": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + INHERITED},
    "server_explicit_deny": {"sddl": "O:DAG:DAD:AI(OD;;CR;{TS};;{SOT})" + EXPLICIT + INHERITED},
    "server_protected": {"sddl": "O:DAG:DAD:P" + EXPLICIT + "(A;;CCDCLCSWRPWPDTLOSDRCWDWO;;;DA)"},
    "server_protected_deny": {"sddl": "O:DAG:DAD:P(OD;;CR;{TS};;{ES})(A;;CR;;;{ES})"},
    "server_es_generic_all": {"sddl": "O:DAG:DAD:AI(A;;GA;;;{ES})" + EXPLICIT + INHERITED},
    "deny_before_allow": {"sddl": "D:(OD;;CR;{TS};;{ES})(A;;CR;;;{ES})"},
    "allow_before_deny": {"sddl": "D:(A;;CR;;;{ES})(OD;;CR;{TS};;{ES})"},
    "inherit_only_deny": {"sddl": "D:(OD;CIIO;CR;{TS};;{ES})(A;;CR;;;{ES})"},
    "deny_other_right": {"sddl": "D:(OD;;CR;{IMP};;{ES})(A;;CR;;;{ES})"},
    "deny_all_extended": {"sddl": "D:(D;;CR;;;{ES})(A;;CR;;;{ES})"},
    "deny_all_extended_object": {"sddl": "D:(OD;;CR;;;{ES})(A;;CR;;;{ES})"},
    "deny_write_property_only": {"sddl": "D:(OD;;WP;{TS};;{ES})(A;;CR;;;{ES})"},
    "generic_all": {"sddl": "D:(A;;GA;;;{ES})"},
    "generic_all_deny": {"sddl": "D:(D;;GA;;;{ES})(A;;GA;;;{ES})"},
    "full_control_mapped": {"sddl": "D:(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;{ES})"},
    "deny_everyone": {"sddl": "D:(OD;;CR;{TS};;WD)(A;;CR;;;{ES})"},
    "allow_other_right_only": {"sddl": "D:(OA;;CR;{IMP};;{ES})(A;;RPLCLORC;;;{ES})"},
    "inherited_object_type": {"sddl": "D:(OA;CIIO;CR;{TS};{CLS};{ES})(OA;CI;CR;{TS};{CLS};{ES})"},
    "null_dacl": {"sddl": "O:SYG:SY"},
    "null_dacl_present": {"sddl": "O:SYG:SY", "patch": {"null_dacl_present": True}},
    "empty_dacl": {"sddl": "O:SYG:SYD:"},
    "empty_dacl_protected": {"sddl": "O:SYG:SYD:P"},
    "audit_aces": {
        "sddl": "O:SYD:(AU;SA;CR;;;WD)(OU;FA;CR;{TS};;{ES})(A;;CR;;;{ES})S:(AU;SA;CR;;;WD)(OU;SAFA;CR;{TS};{CLS};WD)"
    },
    "callbacks": {
        "sddl": "D:(A;;CR;;;{ES})(D;;CR;;;{ES})(OA;;CR;{TS};;{ES})(OD;;CR;{TS};;{ES})(AU;SA;CR;;;WD)(A;;CR;;;{ES})",
        # artx = a conditional expression's signature; the rest is opaque here and padded to 4 bytes.
        "patch": {"types": {"0": 9, "1": 10, "2": 11, "3": 12, "4": 13}, "app_data": {"0": "6172747800000000"}},
    },
    "unknown_type": {"sddl": "D:(A;;RP;;;WD)(A;;CR;;;{ES})", "patch": {"types": {"0": 0x30}}},
    # Where an inherited deny is set (judge/inheritance.py): the container that sets it, and the copies below.
    "exchange_container": {"sddl": "O:DAG:DAD:AI(A;CI;RPLCLORC;;;AU)(A;;CCDCLCSWRPWPDTLOSDRCWDWO;;;SY)"},
    "sets_sot_deny": {"sddl": "O:DAG:DAD:AI(OD;CI;CR;{TS};;{SOT})" + EXPLICIT + INHERITED},
    "sot_deny_inherited": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + "(OD;CIID;CR;{TS};;{SOT})" + INHERITED},
    "sets_sot_deny_np": {"sddl": "O:DAG:DAD:AI(OD;CINP;CR;{TS};;{SOT})" + EXPLICIT + INHERITED},
    "sot_deny_inherited_np": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + "(OD;ID;CR;{TS};;{SOT})" + INHERITED},
    "protected_sets_sot_deny": {"sddl": "O:DAG:DAD:P(OD;CI;CR;{TS};;{SOT})" + EXPLICIT},
    "sets_sot_deny_typed": {"sddl": "O:DAG:DAD:AI(OD;CI;CR;{TS};{SRV};{SOT})" + EXPLICIT + INHERITED},
    "sot_deny_passed_typed": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + "(OD;CIIOID;CR;{TS};{SRV};{SOT})" + INHERITED},
    "sot_deny_inherited_typed": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + "(OD;CIID;CR;{TS};{SRV};{SOT})" + INHERITED},
    "sets_child_dl_deny": {"sddl": "O:DAG:DAD:AI(OD;CI;CR;{TS};;{CDL})" + EXPLICIT + INHERITED},
    "child_dl_deny_inherited": {"sddl": "O:DAG:DAD:AI" + EXPLICIT + "(OD;CIID;CR;{TS};;{CDL})" + INHERITED},
    "sid_forms": {"sddl": "O:S-1-5-21-1-2-3-4294967295G:S-1-16-12288D:(A;;0x1200a9;;;S-1-5-80-1-2-3-4-5)"},
}


def expand(template: str) -> str:
    out = template
    for key, value in {**SIDS, **GUIDS}.items():
        out = out.replace("{" + key + "}", value)
    return out


def to_bytes(sddl: str) -> bytes:
    from samba.dcerpc import security
    from samba.ndr import ndr_pack

    return ndr_pack(security.descriptor.from_sddl(sddl, security.dom_sid(DOMAIN_SID)))


def samba_sddl(data: bytes) -> str:
    from samba.dcerpc import security
    from samba.ndr import ndr_unpack

    return ndr_unpack(security.descriptor, data).as_sddl(security.dom_sid(DOMAIN_SID))


def patch(data: bytes, how: dict) -> bytes:
    buf = bytearray(data)
    control, off_dacl = struct.unpack_from("<H", buf, 2)[0], struct.unpack_from("<I", buf, 16)[0]
    if how.get("null_dacl_present"):
        struct.pack_into("<H", buf, 2, control | 0x0004)
        struct.pack_into("<I", buf, 16, 0)
        return bytes(buf)
    if off_dacl != len(buf) - struct.unpack_from("<H", buf, off_dacl + 2)[0]:
        raise SystemExit("patching expects the DACL last in Samba's layout")
    count = struct.unpack_from("<H", buf, off_dacl + 4)[0]
    aces, pos = [], off_dacl + 8
    for _ in range(count):
        size = struct.unpack_from("<H", buf, pos + 2)[0]
        aces.append(bytearray(buf[pos : pos + size]))
        pos += size
    for index, new_type in how.get("types", {}).items():
        aces[int(index)][0] = new_type
    for index, hex_data in how.get("app_data", {}).items():
        ace = aces[int(index)] + bytes.fromhex(hex_data)
        struct.pack_into("<H", ace, 2, len(ace))
        aces[int(index)] = ace
    body = b"".join(aces)
    header = bytearray(buf[off_dacl : off_dacl + 8])
    struct.pack_into("<H", header, 2, 8 + len(body))
    return bytes(buf[:off_dacl] + header + body)


def generate() -> dict:
    cases = {}
    for name, case in CASES.items():
        sddl = expand(case["sddl"])
        raw = to_bytes(sddl)
        entry = {"sddl": sddl, "samba_sddl": samba_sddl(raw), "hex": raw.hex()}
        if "patch" in case:
            entry["patch"] = case["patch"]
            entry["hex"] = patch(raw, case["patch"]).hex()
        cases[name] = entry
    return {"domain_sid": DOMAIN_SID, "sids": SIDS, "guids": GUIDS, "cases": cases}


def serve() -> None:
    for line in sys.stdin:
        try:
            print(to_bytes(line.rstrip("\n")).hex(), flush=True)
        except Exception as err:  # Samba raises plain RuntimeError/TypeError; report, keep serving
            print(f"ERR {err}", flush=True)


def main() -> None:
    if "--serve" in sys.argv:
        serve()
        return
    text = json.dumps(generate(), indent=1, sort_keys=True) + "\n"
    if "--stdout" in sys.argv:
        sys.stdout.write(text)
    else:
        (Path(__file__).parent / "descriptors.json").write_text(text)


if __name__ == "__main__":
    main()
