"""Runs under the system python (/usr/bin/python3), which has Samba's bindings; the project's python has not.

exchange_compliance.lab.directory starts it as a child process, with samba itself stopped, to change the
DC's database offline through Samba's own module stack (schema checks, SID allocation, descriptor
inheritance): one process and one transaction instead of one samba-tool process per object.

    _samba_worker.py schema SAMBA_DIR LDIF      extend the schema (cache build, once)
    _samba_worker.py populate SAMBA_DIR PLAN    create the scenario's objects from a JSON plan, - for stdin, then
                                                export the plan's keytabs
    _samba_worker.py sddl [DOMAIN_SID]          render a binary security descriptor (base64 on stdin) as SDDL

Only the standard library and samba are imported here: this file must not import the project.
"""

import base64
import json
import os
import re
import secrets
import sys
import time

import ldb
from samba import param
from samba.auth import system_session
from samba.dcerpc import security
from samba.ndr import ndr_pack, ndr_unpack
from samba.samdb import SamDB

SID_PLACEHOLDER = re.compile(r"\{sid:([^}]+)\}")


class WorkerError(Exception):
    pass


def open_samdb(samba_dir, schema_updates=False):
    lp = param.LoadParm()
    lp.load(f"{samba_dir}/etc/smb.conf")
    if schema_updates:
        lp.set("dsdb:schema update allowed", "yes")
    return SamDB(url=f"{samba_dir}/private/sam.ldb", session_info=system_session(), lp=lp)


# --- schema -------------------------------------------------------------------------------------------


def ldif_entries(text):
    """Split an LDIF file into entries (comment lines dropped), keeping their order."""
    entries, current = [], []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                entries.append("\n".join(current) + "\n")
                current = []
            continue
        current.append(line)
    if current:
        entries.append("\n".join(current) + "\n")
    return entries


def extend_schema(samba_dir, ldif_path):
    samdb = open_samdb(samba_dir, schema_updates=True)
    schema_dn = str(samdb.get_schema_basedn())
    with open(ldif_path, encoding="utf-8") as handle:
        text = handle.read().replace("${SCHEMADN}", schema_dn)

    def apply(entry):
        if "\nchangetype: modify" in entry:
            samdb.modify_ldif(entry)
        else:
            samdb.add_ldif(entry)

    for entry in ldif_entries(text):
        dn = entry.splitlines()[0]
        try:
            try:
                apply(entry)
            except ldb.LdbError:
                # It names something added earlier (subClassOf, mayContain) that the loaded schema does not
                # know yet: reload the schema (about 0.25 s, so only when needed) and try once more.
                samdb.set_schema_update_now()
                apply(entry)
        except ldb.LdbError as exc:
            raise WorkerError(f"schema entry {dn}: {exc.args[-1]}") from None
    samdb.set_schema_update_now()


# --- populate -----------------------------------------------------------------------------------------


class Populator:
    def __init__(self, samdb, domain_dn):
        self.samdb = samdb
        self.domain_dn = domain_dn
        self.domain_sid = security.dom_sid(samdb.get_domain_sid())
        self._accounts = {}  # lower-case sAMAccountName -> (dn, sid)

    def account(self, name):
        key = name.lower()
        if key not in self._accounts:
            res = self.samdb.search(
                base=self.domain_dn,
                scope=ldb.SCOPE_SUBTREE,
                expression=f"(sAMAccountName={ldb.binary_encode(name)})",
                attrs=["objectSid"],
            )
            if len(res) != 1:
                raise WorkerError(f"no account named {name!r} in the domain")
            sid = str(ndr_unpack(security.dom_sid, res[0]["objectSid"][0]))
            self._accounts[key] = (str(res[0].dn), sid)
        return self._accounts[key]

    def sddl_with_sids(self, sddl):
        return SID_PLACEHOLDER.sub(lambda m: self.account(m.group(1))[1], sddl)

    def add(self, dn, attrs, password=None):
        message = ldb.Message(ldb.Dn(self.samdb, dn))
        for name, values in attrs.items():
            message[name] = ldb.MessageElement([v.encode("utf-8") for v in values], ldb.FLAG_MOD_ADD, name)
        if password is not None:
            quoted = f'"{password}"'.encode("utf-16-le")
            message["unicodePwd"] = ldb.MessageElement([quoted], ldb.FLAG_MOD_ADD, "unicodePwd")
        try:
            self.samdb.add(message)
        except ldb.LdbError as exc:
            raise WorkerError(f"adding {dn}: {exc.args[-1]}") from None

    def computer(self, dn, attrs):
        """A computer account with a machine password nobody knows: the KDC then holds its keys, and the
        keytab exported after the commit is the only copy, as on a joined server."""
        self.add(dn, attrs, password=secrets.token_urlsafe(24))

    def spns(self, account, spns):
        message = ldb.Message(ldb.Dn(self.samdb, self.account(account)[0]))
        message["servicePrincipalName"] = ldb.MessageElement(spns, ldb.FLAG_MOD_ADD, "servicePrincipalName")
        try:
            self.samdb.modify(message)
        except ldb.LdbError as exc:
            raise WorkerError(f"adding SPNs {spns} to {account}: {exc.args[-1]}") from None

    def group(self, dn, name, group_type):
        """Create a scenario group, unless the domain has one by that name (Domain Admins, Exchange Trusted
        Subsystem, ...): then the scenario only nests it."""
        try:
            self.account(name)
            return
        except WorkerError:
            pass
        self.add(dn, {"objectClass": ["group"], "sAMAccountName": [name], "groupType": [group_type]})

    def replace(self, dn, attrs):
        message = ldb.Message(ldb.Dn(self.samdb, dn))
        for name, values in attrs.items():
            message[name] = ldb.MessageElement([v.encode("utf-8") for v in values], ldb.FLAG_MOD_REPLACE, name)
        try:
            self.samdb.modify(message)
        except ldb.LdbError as exc:
            raise WorkerError(f"modifying {dn}: {exc.args[-1]}") from None

    def members(self, group, members):
        group_dn = self.account(group)[0]
        message = ldb.Message(ldb.Dn(self.samdb, group_dn))
        values = [self.account(member)[0] for member in members]
        message["member"] = ldb.MessageElement(values, ldb.FLAG_MOD_ADD, "member")
        try:
            self.samdb.modify(message)
        except ldb.LdbError as exc:
            raise WorkerError(f"adding members {members} to {group}: {exc.args[-1]}") from None

    def get_sddl(self, dn):
        res = self.samdb.search(
            base=dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=["sd_flags:1:4"]
        )
        if not res:
            raise WorkerError(f"no object {dn}")
        return ndr_unpack(security.descriptor, res[0]["nTSecurityDescriptor"][0]).as_sddl(self.domain_sid)

    def set_dacl(self, dn, sddl):
        # Written as SDDL through Samba's own parser; the DACL flag only, so owner and group stay.
        descriptor = security.descriptor.from_sddl(sddl, self.domain_sid)
        message = ldb.Message(ldb.Dn(self.samdb, dn))
        message["nTSecurityDescriptor"] = ldb.MessageElement(
            ndr_pack(descriptor), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor"
        )
        try:
            self.samdb.modify(message, controls=["sd_flags:1:4"])
        except ldb.LdbError as exc:
            raise WorkerError(f"writing the DACL of {dn}: {exc.args[-1]}") from None

    def aces(self, dn, aces):
        """Insert ACEs at the head of the DACL, as `samba-tool dsacl set` does."""
        current = self.get_sddl(dn)
        dacl = re.search(r"D:([A-Z]*)(\(.*)?$", current)
        if dacl is None:
            raise WorkerError(f"{dn} has no DACL to add to: {current}")
        flags, rest = dacl.group(1), dacl.group(2) or ""
        rest = re.split(r"S:", rest)[0]
        self.set_dacl(dn, f"D:{flags}{self.sddl_with_sids(aces)}{rest}")

    def protect(self, dn):
        """Protect the DACL from inheritance and drop the inherited ACEs (ID flag), as in the Hybrid Agent article."""
        current = self.get_sddl(dn)
        dacl = re.search(r"D:([A-Z]*)(\(.*)?$", current)
        flags, rest = dacl.group(1), dacl.group(2) or ""
        explicit = [ace for ace in re.findall(r"\([^)]*\)", rest) if "ID" not in ace.split(";")[1]]
        if "P" not in flags:
            flags = "P" + flags
        self.set_dacl(dn, f"D:{flags}{''.join(explicit)}")

    def user(self, name, password):
        try:
            self.samdb.newuser(name, password)
        except ldb.LdbError as exc:
            raise WorkerError(f"creating user {name}: {exc.args[-1]}") from None


def populate(samba_dir, plan_path):
    # "-": the plan comes on stdin, so the audit account's password is never written to disk.
    if plan_path == "-":
        plan = json.load(sys.stdin)
    else:
        with open(plan_path, encoding="utf-8") as handle:
            plan = json.load(handle)
    samdb = open_samdb(samba_dir)
    populator = Populator(samdb, plan["domain_dn"])
    started = time.monotonic()
    samdb.transaction_start()
    try:
        for step in plan["steps"]:
            op = step["op"]
            if op == "add":
                populator.add(step["dn"], step["attrs"])
            elif op == "computer":
                populator.computer(step["dn"], step["attrs"])
            elif op == "spns":
                populator.spns(step["account"], step["spns"])
            elif op == "group":
                populator.group(step["dn"], step["name"], step["groupType"])
            elif op == "replace":
                populator.replace(step["dn"], step["attrs"])
            elif op == "members":
                populator.members(step["group"], step["members"])
            elif op == "aces":
                populator.aces(step["dn"], step["sddl"])
            elif op == "protect":
                populator.protect(step["dn"])
            elif op == "user":
                populator.user(step["name"], step["password"])
            else:
                raise WorkerError(f"unknown plan step {op!r}")
    except BaseException:
        samdb.transaction_cancel()
        raise
    samdb.transaction_commit()
    written = time.monotonic()
    for keytab in plan.get("keytabs", ()):
        export_keytab(samba_dir, keytab["path"], keytab["principals"])
    print(
        json.dumps(
            {
                "steps": len(plan["steps"]),
                "seconds": round(written - started, 3),
                "keytab_seconds": round(time.monotonic() - written, 3),
            }
        )
    )


def export_keytab(samba_dir, path, principals):
    """What `samba-tool domain exportkeytab --principal` writes, for several principals in one process (about
    10 ms each instead of a second per samba-tool run). The file is made anew, readable by its owner only."""
    from samba import enable_net_export_keytab
    from samba.credentials import Credentials
    from samba.net import Net

    enable_net_export_keytab()
    lp = param.LoadParm()
    lp.load(f"{samba_dir}/etc/smb.conf")
    net = Net(Credentials(), lp)
    if os.path.exists(path):
        os.unlink(path)  # the export appends: keys of an earlier up would linger
    saved_stdout, saved_umask = os.dup(1), os.umask(0o077)
    try:
        # Samba's C code prints a line per export on fd 1, which carries this worker's JSON result.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        for principal in principals:
            try:
                net.export_keytab(keytab=path, principal=principal)
            except RuntimeError as exc:
                raise WorkerError(f"exporting {principal} to {path}: {exc}") from None
    finally:
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        os.umask(saved_umask)


def render_sddl(domain_sid=None):
    """With the domain SID, well-known domain groups come out as aliases (DA, EA, SA), as samba-tool shows."""
    data = base64.b64decode(sys.stdin.read())
    descriptor = ndr_unpack(security.descriptor, data)
    print(descriptor.as_sddl(security.dom_sid(domain_sid)) if domain_sid else descriptor.as_sddl())


def main(argv):
    try:
        if argv[1:2] == ["schema"] and len(argv) == 4:
            extend_schema(argv[2], argv[3])
        elif argv[1:2] == ["populate"] and len(argv) == 4:
            populate(argv[2], argv[3])
        elif argv[1:2] == ["sddl"] and len(argv) <= 3:
            render_sddl(argv[2] if len(argv) == 3 else None)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
