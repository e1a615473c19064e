"""Kerberos end to end on the lab org: `pytest tests_env --org lab-kerberos` reads the directory with SASL GSSAPI
and runs every probe over WinRM with Kerberos, from the audit account's keytab, with no password anywhere.

The lab's logs are the witnesses: the lab servers log each WinRM request with the mechanism that authenticated
it, and the Samba DC's authentication audit logs each LDAP bind (`[LDAP,krb5]` or `[LDAP,simple bind]`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

import pytest
from lab_org import LAB_ROOT, lab_up, needs_lab, outcomes, run_suite
from test_kerberos import make_keytab

from exchange_compliance.collect import kerberos, ldap_kerberos
from exchange_compliance.collect.directory import DirectoryReader
from exchange_compliance.collect.ldap import open_connection
from exchange_compliance.config import load_org_config
from exchange_compliance.lab import control
from exchange_compliance.lab.layout import AUDIT_ACCOUNT, REALM, LabLayout

pytestmark = needs_lab

LAYOUT = LabLayout(LAB_ROOT)
LAB_KERBEROS = Path(__file__).resolve().parents[1] / "orgs" / "lab-kerberos.toml"
PRINCIPAL = f"{AUDIT_ACCOUNT}@{REALM}"
FAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), Path("/usr/lib/faketime/libfaketime.so.1"))


class LogWindow:
    """What the lab's logs gained while a run ran."""

    def __init__(self) -> None:
        self.files = {"servers": LAYOUT.state_dir / "servers.log", "samba": LAYOUT.samba_dir / "samba.log"}
        self.start = {name: path.stat().st_size for name, path in self.files.items()}
        self.end: dict[str, int] = {}

    def close(self) -> None:
        self.end = {name: path.stat().st_size for name, path in self.files.items()}

    def read(self, name: str) -> str:
        with open(self.files[name], "rb") as handle:
            handle.seek(self.start[name])
            return handle.read(self.end[name] - self.start[name]).decode("utf-8", errors="replace")

    def winrm_requests(self) -> list[str]:
        """'<mechanism> as <user>' of each WinRM request."""
        return re.findall(r" request from \S+: (\S+ as \S+)", self.read("servers"))


def without_passwords() -> dict[str, str]:
    """Our environment less every lab variable: the run gets nothing but what the root conftest exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EXCOMP_LAB_") and not k.startswith("KRB5")}


@pytest.fixture(scope="module")
def seeds_runs(tmp_path_factory):
    """The seeds scenario judged twice: `--org lab` (simple bind, NTLM) and `--org lab-kerberos`."""
    lab_up("seeds")
    runs = {}
    for org, env in (("lab", None), ("lab-kerberos", without_passwords())):
        window = LogWindow()
        started = time.monotonic()
        status, results, output = run_suite(tmp_path_factory.mktemp(org), org=org, env=env)
        seconds = time.monotonic() - started
        window.close()
        print(f"\n{org}: {seconds:.2f} s for the whole run, {results.get('duration_seconds')} s in the suite")
        runs[org] = (status, results, output, window)
    return runs


def test_kerberos_run_gives_exactly_the_failing_rows_of_the_ntlm_run(seeds_runs):
    ntlm_status, ntlm, _, _ = seeds_runs["lab"]
    status, results, output, _ = seeds_runs["lab-kerberos"]
    assert (status, ntlm_status) == (1, 1), output
    assert outcomes(results, "failed", "error") == outcomes(ntlm, "failed", "error")
    assert outcomes(results, "failed") and not outcomes(results, "error")
    assert results["unreachable"] == []


def test_every_winrm_request_of_the_kerberos_run_used_kerberos(seeds_runs):
    requests = seeds_runs["lab-kerberos"][3].winrm_requests()
    assert len(requests) >= 4 * 6  # per server at least: open the shell, run, receive, close
    assert set(requests) == {f"kerberos as {PRINCIPAL}"}
    # ... where the NTLM run, against the same servers, used NTLM.
    assert {r.split(" ")[0] for r in seeds_runs["lab"][3].winrm_requests()} == {"ntlm"}


def test_the_kerberos_runs_ldap_bind_was_kerberos(seeds_runs):
    samba = seeds_runs["lab-kerberos"][3].read("samba")
    assert re.search(rf"Successful AuthZ: \[LDAP,krb5\] user \[LAB\]\\\[{AUDIT_ACCOUNT}\]", samba), samba[-2000:]
    assert "[LDAP,simple bind" not in samba
    assert "[LDAP,simple bind/TLS] user [LAB]\\[excompliance@lab.contoso.test]" in seeds_runs["lab"][3].read("samba")


def test_lab_kerberos_exports_no_password(monkeypatch):
    lab_up("seeds")
    for name in ("EXCOMP_LAB_PASSWORD", "EXCOMP_LAB_KEYTAB", "EXCOMP_LAB_PRINCIPAL"):
        monkeypatch.setenv(name, "left over")
    control.load_credentials(LAB_ROOT, kerberos=True)
    lab = {k: v for k, v in os.environ.items() if k.startswith("EXCOMP_LAB_")}
    assert lab == {"EXCOMP_LAB_KEYTAB": str(LAYOUT.audit_keytab), "EXCOMP_LAB_PRINCIPAL": PRINCIPAL}
    assert kerberos.keytab_principals(LAYOUT.audit_keytab) == [PRINCIPAL]


# --- LDAP: sealed on 389, bound to the TLS channel over LDAPS --------------------------------------------


def lab_kerberos_config(tmp_path: Path, directory: str = "", krb5_conf: Path | None = None) -> Path:
    """orgs/lab-kerberos.toml, its lab paths absolute, `directory` lines added to [directory]."""
    text = LAB_KERBEROS.read_text().replace("../.lab/", f"{LAB_ROOT}/")
    text = text.replace('tls = "ldaps"\n', directory or 'tls = "ldaps"\n')
    if krb5_conf is not None:
        text = text.replace(f'config_file = "{LAYOUT.krb5_conf}"', f'config_file = "{krb5_conf}"')
    path = tmp_path / "lab-kerberos.toml"
    path.write_text(text)
    return path


@pytest.fixture
def ticket_env(monkeypatch):
    """The lab's keytab and principal exported; the Kerberos variables acquire() sets restored afterwards."""
    lab_up("seeds")
    for name in ("KRB5CCNAME", "KRB5_CLIENT_KTNAME", "KRB5_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXCOMP_LAB_KEYTAB", str(LAYOUT.audit_keytab))
    monkeypatch.setenv("EXCOMP_LAB_PRINCIPAL", PRINCIPAL)


class Recorder:
    """A socket that keeps every byte that crosses it."""

    def __init__(self, sock) -> None:
        self.sock, self.seen = sock, bytearray()

    def sendall(self, data: bytes) -> None:
        self.seen += data
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        self.seen += data
        return data

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def test_ldap_on_389_is_signed_and_sealed_by_kerberos(ticket_env, tmp_path):
    config = load_org_config(lab_kerberos_config(tmp_path, 'tls = "none"\n'))
    ticket = kerberos.acquire(config)
    connection = open_connection(config, ticket).connection
    try:
        assert isinstance(connection.socket, ldap_kerberos.SaslSocket)
        wire = connection.socket._socket = Recorder(connection.socket._socket)
        directory = DirectoryReader(connection).read()
    finally:
        connection.unbind()
    assert [s.name for s in directory.servers] == ["EX01", "EX02", "EX03", "EX04", "EX05", "EX06"]
    # The searches and their answers crossed the wire, none of it readable.
    assert len(wire.seen) > 10_000
    for clear in (b"msExchExchangeServer", b"Microsoft Exchange", b"ex01.lab.contoso.test", b"EX01"):
        assert clear not in wire.seen


def test_the_lab_dc_refuses_kerberos_on_389_without_the_security_layer(ticket_env, tmp_path):
    # What makes the sealing necessary: the DC requires LDAP signing, as `ldap server require strong auth` does.
    import ldap3

    config = load_org_config(lab_kerberos_config(tmp_path, 'tls = "none"\n'))
    ticket = kerberos.acquire(config)
    server = ldap3.Server(config.address_of("dc01.lab.contoso.test"), port=389, get_info=ldap3.NONE)
    connection = ldap3.Connection(server, authentication=ldap3.SASL, sasl_mechanism=ldap3.KERBEROS)
    connection.open()
    try:
        context = ldap_kerberos.security_context(
            ticket, "ldap", "dc01.lab.contoso.test", sealed=False, certificate=None
        )
        result = ldap_kerberos._negotiate(connection, context, ldap_kerberos.NO_LAYER)
    finally:
        connection.unbind()
    assert result["description"] == "strongerAuthRequired", result


def test_the_kerberos_authenticator_carries_the_tls_channel_binding(ticket_env, tmp_path):
    # Samba 4.17 does not check LDAP channel bindings (AD does with LdapEnforceChannelBinding = 2), so the binding
    # is checked by a Kerberos acceptor holding the lab servers' keys: the same context the LDAP bind makes.
    import gssapi
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    config = load_org_config(lab_kerberos_config(tmp_path))
    ticket = kerberos.acquire(config)
    certificates = [
        x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
        for path in (LAYOUT.dc_ca_file, LAYOUT.winrm_ca_file)
    ]
    acceptor_credentials = gssapi.Credentials(usage="accept", store={"keytab": str(LAYOUT.servers_keytab)})

    def accept(bound_to: bytes):
        initiator = ldap_kerberos.security_context(
            ticket, "HTTP", "ex01.lab.contoso.test", sealed=False, certificate=certificates[0]
        )
        bindings = gssapi.raw.ChannelBindings(application_data=kerberos.tls_server_end_point(bound_to))
        acceptor = gssapi.SecurityContext(creds=acceptor_credentials, usage="accept", channel_bindings=bindings)
        acceptor.step(initiator.step())  # a refusal is kept for the next read of the context (an error token)
        assert acceptor.complete
        return acceptor

    same = accept(certificates[0])  # the channel the client saw: accepted, and bound to it
    assert gssapi.RequirementFlag.channel_bound in same.actual_flags
    with pytest.raises(gssapi.exceptions.BadChannelBindingsError):
        accept(certificates[1])  # another channel (a relay in the middle): refused


# --- the KDC refuses: exit 6, one line ----------------------------------------------------------------------


def refused_run(tmp_path: Path, keytab: Path, principal: str, extra_env: dict | None = None, krb5_conf=None):
    config = lab_kerberos_config(tmp_path, krb5_conf=krb5_conf)
    env = {**without_passwords(), "EXCOMP_LAB_KEYTAB": str(keytab), "EXCOMP_LAB_PRINCIPAL": principal}
    return run_suite(tmp_path / "reports", org=str(config), env={**env, **(extra_env or {})})


@pytest.mark.parametrize(
    ("principal", "said"),
    [
        # A keytab made before the account's password changed: the KDC refuses its key.
        (PRINCIPAL, "the KDC refused the keytab's key: the account's password changed after the keytab was made"),
        # A principal the directory does not have.
        (f"nobody@{REALM}", "the KDC does not know the principal"),
    ],
)
def test_kdc_refusal_is_exit_6_naming_why(tmp_path, principal, said):
    lab_up("seeds")
    keytab = make_keytab(tmp_path / "stale.keytab", [(principal, secrets.token_bytes(32))])
    status, results, output = refused_run(tmp_path, keytab, principal)
    assert status == 6, output
    line = f"the org could not be checked: no ticket for {principal} from {keytab}: Kerberos: {said}"
    assert line in output and "Traceback" not in output
    assert results["verdict"]["status"] == "unreachable" and said in results["verdict"]["line"]


@pytest.mark.skipif(not FAKETIME.exists(), reason="the clock skew is made with libfaketime: run scripts/setup")
def test_clock_skew_is_exit_6_naming_it(tmp_path):
    # MIT clients correct a skew by the KDC's time by default (kdc_timesync); a host configured not to, two hours
    # ahead of the KDC, gets the KDC's KRB_AP_ERR_SKEW.
    lab_up("seeds")
    krb5_conf = tmp_path / "krb5.conf"
    krb5_conf.write_text(LAYOUT.krb5_conf.read_text().replace("[libdefaults]\n", "[libdefaults]\n\tkdc_timesync = 0\n"))
    skewed = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+2h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    status, _, output = refused_run(tmp_path, LAYOUT.audit_keytab, PRINCIPAL, skewed, krb5_conf)
    assert status == 6, output
    assert "Kerberos: clock skew: this host's clock and the KDC's differ by more than the allowed 5 minutes" in output


# --- a server Kerberos cannot reach: its rows only ---------------------------------------------------------


def test_a_server_without_an_spn_is_an_error_on_its_own_rows(tmp_path):
    # healthy's EDGE01 is an Edge Transport server: not joined, so no account holds HTTP/edge01.
    lab_up("healthy")
    status, results, output = run_suite(tmp_path, org="lab-kerberos", env=without_passwords())
    assert status == 0, output
    assert results["unreachable"] == ["EDGE01"]
    facts = json.loads((tmp_path / "lab-kerberos" / "latest-facts.json").read_text())["facts"]
    assert facts["probes"]["EDGE01"]["reason"] == (
        "Kerberos (HTTP/<the server's FQDN>): no account "
        "in the directory has this SPN: the server is not in the domain (an Edge Transport server), or its SPN is "
        "missing (setspn -L <server>) [Server not found in Kerberos database]"
    )
    assert all(facts["probes"][name]["type"] == "ServerProbe" for name in ("EX01", "EX02", "EX03", "EX04"))
