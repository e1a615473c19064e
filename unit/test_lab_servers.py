"""The lab's Exchange servers: the probe's output as Windows prints it, and WinRM/TLS on the wire.

The `lab` tests start `python -m exchange_compliance.lab.servers` for the seeds scenario (plus a few servers
for the cases seeds does not plant: unreachable, slow, no 444 binding, Edge) on loopback addresses of their
own, and talk to it with pywinrm unchanged, validating certificates against the servers' FQDNs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import winrm
from requests.adapters import HTTPAdapter
from requests_ntlm import HttpNtlmAuth
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError

from exchange_compliance.collect.probe import (
    CMD_LINE_LIMIT,
    encode_script,
    parse_probe_output,
    probe_command,
    probe_script,
)
from exchange_compliance.lab.certs import LabCertificates, issue_certificates, thumbprint
from exchange_compliance.lab.layout import LabLayout
from exchange_compliance.lab.probe_output import (
    ServerState,
    ascii_only,
    convert_to_json,
    server_facts,
)
from exchange_compliance.lab.scenario import Scenario, ServerSpec, load_scenario
from exchange_compliance.lab.servers import (
    PROGRESS_CLIXML,
    READY_FILE,
    is_probe_command,
    load_server_state,
    render_probe_output,
    run_command,
    write_server_state,
)
from exchange_compliance.lab.wsman import (
    ERROR_OPERATION_TIMEOUT,
    ERROR_SHELL_NOT_FOUND,
    ERROR_SHELL_QUOTA,
    MAX_SHELLS_PER_USER,
    STREAM_CHUNK,
    CommandResult,
    ShellHost,
)

REPO = Path(__file__).resolve().parents[1]
CREDENTIALS = ("LAB", "excompliance", "Lab-Audit-Passw0rd!")
USER = f"{CREDENTIALS[0]}\\{CREDENTIALS[1]}"
PROBE_LINE = " ".join([probe_command()[0], *probe_command()[1]])


def lab_scenario() -> Scenario:
    """seeds, plus the cases it does not plant."""
    seeds = load_scenario("seeds")
    extra = (
        ServerSpec(name="EX90", unreachable=True),
        ServerSpec(name="EX91", latency_ms=250),
        ServerSpec(name="EX94", probe_seconds=1.5),
        ServerSpec(name="EX92", backend_certificate="none"),
        ServerSpec(name="EX93", no_private_key=("exchange",)),
        ServerSpec(name="EDGE01", roles=("Edge",), member_of=()),
    )
    return dataclasses.replace(seeds, servers=(*seeds.servers, *extra))


@dataclasses.dataclass
class Lab:
    layout: LabLayout
    scenario: Scenario
    certs: LabCertificates
    states: dict[str, ServerState]

    def state(self, name: str) -> ServerState:
        return self.states[name]


def _build_state(root: Path, addresses: list[str] | None = None) -> Lab:
    layout = LabLayout(root)
    scenario = lab_scenario()
    certs = issue_certificates(scenario, datetime.now(UTC), layout.certs_dir, key_cache=root / "keys")
    write_server_state(scenario, certs, layout, CREDENTIALS, addresses=addresses)
    return Lab(layout, scenario, certs, {s.name: s for s in load_server_state(layout)})


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return _build_state(tmp_path_factory.mktemp("lab-state"))


# ----------------------------------------------------------------------------------- the probe's output


def test_probe_output_parses_back_into_the_servers_facts(offline: Lab) -> None:
    for server in offline.scenario.servers:
        state = offline.state(server.name)
        if server.is_edge:
            continue
        probe = parse_probe_output(render_probe_output(state))
        assert probe.computer_name == server.name
        assert probe.last_boot is not None and probe.last_boot.tzinfo is not None
        store = offline.scenario.store_of(server)
        expected = {offline.certs.for_server(server.name, name).thumbprint: name for name in store}
        assert {c.thumbprint for c in probe.certificates} == set(expected)
        for cert in probe.certificates:
            issued = offline.certs.for_server(server.name, expected[cert.thumbprint])
            assert cert.der == issued.der
            assert cert.not_after == issued.certificate.not_valid_after_utc
            assert cert.has_private_key == (expected[cert.thumbprint] not in server.no_private_key)
            assert cert.friendly_name == issued.friendly_name
        backend = [b for b in probe.bindings if b.site == "Exchange Back End" and b.protocol == "https"]
        ssl_444 = [b for b in probe.ssl_bindings if b.ip_port == "0.0.0.0:444"]
        if server.backend_certificate == "none":
            assert backend == [] and ssl_444 == []
        else:
            bound = offline.certs.for_server(server.name, server.backend_certificate).thumbprint
            assert [(b.binding_information, b.certificate_hash, b.certificate_store) for b in backend] == [
                ("*:444:", bound, "My")
            ]
            assert [(b.certificate_hash, b.store_name) for b in ssl_444] == [(bound, "My")]
            assert ssl_444[0].application_id == "{4dc3e181-e14b-4a21-b022-59fc669b0914}"
        http = [b for b in probe.bindings if b.protocol == "http"]
        assert {(b.site, b.port, b.certificate_hash) for b in http} == {
            ("Exchange Back End", 81, None),
            ("Default Web Site", 80, None),
        }


def test_probe_output_of_ex01_in_detail(offline: Lab) -> None:
    text = render_probe_output(offline.state("EX01"))
    assert text.endswith("}\r\n") and "\n" not in text[:-1]  # -Compress: one line, then Write-Output's CRLF
    document = json.loads(text)
    assert list(document) == ["probe", "computer", "boot", "certificates", "bindings", "http"]
    assert document["probe"] == 1 and document["computer"] == "EX01"
    exchange = next(c for c in document["certificates"] if c["friendlyName"] == "Microsoft Exchange")
    assert exchange["subject"] == exchange["issuer"] == "CN=EX01"
    assert exchange["dns"] == ["EX01", "ex01.lab.contoso.test"]
    assert exchange["notAfter"].endswith(".0000000Z") and len(exchange["notAfter"]) == 28
    assert exchange["privateKey"] is True
    assert exchange["thumbprint"] == thumbprint(offline.certs.for_server("EX01", "exchange").der)
    assert all(list(b) == ["site", "protocol", "info", "hash", "store"] for b in document["bindings"])
    # http.sys's registry values: SslCertHash and AppId (REG_BINARY) as [BitConverter]::ToString prints them
    # without its dashes, the subkeys in registry order.
    backend = offline.certs.for_server("EX01", offline.scenario.server("EX01").backend_certificate).thumbprint
    assert document["http"][-1] == {
        "table": "SslBindingInfo",
        "key": "0.0.0.0:444",
        "hash": backend,
        "appId": "81E1C34D4BE1214AB02259FC669B0914",
        "store": "My",
    }
    assert [b["key"] for b in document["http"]] == ["0.0.0.0:443", "0.0.0.0:444"]


def test_edge_servers_have_no_iis(offline: Lab) -> None:
    # probe.ps1 skips Get-WebBinding where the WebAdministration module is absent (Edge Transport servers).
    probe = parse_probe_output(render_probe_output(offline.state("EDGE01")))
    assert probe.bindings == ()
    assert probe.ssl_bindings == ()
    assert probe.certificates, "the certificate store is still read"
    assert offline.state("EDGE01").presented_thumbprint is None


def test_every_lab_server_reads_back_as_its_facts(offline: Lab) -> None:
    # The parser and the lab's answer share the probe's field description: what the lab means is what the
    # suite reads.
    for state in offline.states.values():
        assert parse_probe_output(render_probe_output(state)) == server_facts(state)


def test_output_is_ascii_whatever_the_certificate_says() -> None:
    assert ascii_only('{"s":"CN=Serveur d\'\u00e9change, O=M\u00fcller GmbH \U0001f512"}') == (
        '{"s":"CN=Serveur d\'\\u00e9change, O=M\\u00fcller GmbH \\ud83d\\udd12"}'
    )
    assert json.loads(ascii_only(json.dumps({"s": "\u00e9\U0001f512"}, ensure_ascii=False))) == {
        "s": "\u00e9\U0001f512"
    }


def test_convert_to_json_escapes_like_windows_powershell() -> None:
    value = {"a": 'it\'s <b> & "c"\\\r\n\x01', "n": 1, "t": True, "f": False, "z": None, "l": ["x"], "e": []}
    text = convert_to_json(value)
    assert text == (
        '{"a":"it\\u0027s \\u003cb\\u003e \\u0026 \\"c\\"\\\\\\r\\n\\u0001","n":1,"t":true,"f":false,"z":null,'
        '"l":["x"],"e":[]}'
    )
    assert json.loads(text) == value


# ------------------------------------------------------------------------------------------- commands


def test_only_the_probe_is_answered(offline: Lab) -> None:
    state = offline.state("EX01")
    assert is_probe_command(PROBE_LINE)
    assert is_probe_command(PROBE_LINE.replace("powershell", "PowerShell.exe", 1).replace("-NoProfile", "-noprofile"))
    tampered = " ".join([*PROBE_LINE.split()[:-1], encode_script(probe_script() + "\nGet-Process")])
    assert not is_probe_command(tampered)
    assert not is_probe_command("powershell -encodedcommand " + encode_script(probe_script()))
    result = run_command(state, PROBE_LINE, False)
    assert result == CommandResult(render_probe_output(state), PROGRESS_CLIXML, 0)
    refused = CommandResult(
        "",
        "'powershell' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n",
        1,
    )
    assert run_command(state, tampered, False) == refused
    assert run_command(state, "ipconfig /all", False) == CommandResult(
        "", "'ipconfig' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n", 1
    )
    assert run_command(state, "x" * (CMD_LINE_LIMIT + 1), False) == CommandResult(
        "", "The command line is too long.\r\n", 1
    )
    assert run_command(state, "ipconfig", True) is None  # no cmd.exe: CreateProcess fails, a WS-Man fault


class _DirectTransport:
    """pywinrm's transport replaced by a direct call into ShellHost: the SOAP layer without the network."""

    def __init__(self, host: ShellHost) -> None:
        self.host = host

    def send_message(self, message: str | bytes) -> bytes:
        data = message.encode() if isinstance(message, str) else message
        status, xml = self.host.handle(data, USER, "127.0.0.1")
        if status != 200:
            raise WinRMTransportError("http", status, xml.decode())
        return xml

    def close_session(self) -> None:
        pass


def _direct_protocol(run) -> tuple[winrm.Protocol, ShellHost]:
    protocol = winrm.Protocol("https://127.0.0.1:5986/wsman", transport="ntlm", username=USER, password="x")
    host = ShellHost("EX01", "https://ex01.lab.contoso.test:5986/wsman", run)
    protocol.transport = _DirectTransport(host)  # type: ignore[assignment]
    return protocol, host


def test_shell_lifecycle_with_pywinrm_parsing() -> None:
    big = "".join(f"line {i:06d}\r\n" for i in range(30000))  # 390 KB: several Receives at 150 KB envelopes
    protocol, host = _direct_protocol(lambda line, skip: CommandResult(big, "warn\r\n", 3))
    shell = protocol.open_shell(codepage=65001)
    command = protocol.run_command(shell, "whatever", ["a", "b"])
    receives = 0
    stdout, stderr, done = b"", b"", False
    while not done:
        out, err, code, done = protocol.get_command_output_raw(shell, command)
        stdout, stderr, receives = stdout + out, stderr + err, receives + 1
    assert (stdout.decode(), stderr, code) == (big, b"warn\r\n", 3)
    assert receives >= 3  # what does not fit in MaxEnvelopeSize waits for the next Receive
    protocol.cleanup_command(shell, command)
    protocol.close_shell(shell)
    assert host.shell_count == 0
    with pytest.raises(WSManFaultError) as fault:
        protocol.run_command(shell, "again")
    assert fault.value.wsman_fault_code == ERROR_SHELL_NOT_FOUND
    assert fault.value.fault_subcode == "w:InvalidSelectors"


def test_output_is_split_into_stream_chunks_and_encoded_in_the_shell_code_page() -> None:
    protocol, _ = _direct_protocol(lambda line, skip: CommandResult("é" * (STREAM_CHUNK + 10), "", 0))
    shell = protocol.open_shell()  # pywinrm asks for code page 437
    raw_parts = []
    original = protocol.send_message

    def spy(message: str) -> bytes:
        response = original(message)
        raw_parts.append(response)
        return response

    protocol.send_message = spy  # type: ignore[method-assign]
    command = protocol.run_command(shell, "x")
    out, _, code = protocol.get_command_output(shell, command)
    assert out == ("é" * (STREAM_CHUNK + 10)).encode("cp437") and code == 0
    assert raw_parts[-1].count(b'<rsp:Stream Name="stdout"') == 3  # two pieces, then the End marker


def test_leaked_shells_run_into_the_per_user_quota() -> None:
    protocol, host = _direct_protocol(lambda line, skip: CommandResult("", "", 0))
    shells = [protocol.open_shell() for _ in range(MAX_SHELLS_PER_USER)]
    with pytest.raises(WSManFaultError) as fault:
        protocol.open_shell()
    assert fault.value.wsman_fault_code == ERROR_SHELL_QUOTA
    protocol.close_shell(shells[0])
    protocol.close_shell(protocol.open_shell())
    assert host.shell_count == MAX_SHELLS_PER_USER - 1


def test_unknown_resource_and_action_are_faults() -> None:
    protocol, host = _direct_protocol(lambda line, skip: CommandResult("", "", 0))
    request = {"env:Envelope": protocol.build_wsman_header(action="http://x/Bogus", resource_uri="http://x/psrp")}
    import xmltodict

    status, xml = host.handle(xmltodict.unparse(request).encode(), USER, "127.0.0.1")
    assert status == 500 and b"w:DestinationUnreachable" in xml
    request = {
        "env:Envelope": protocol.build_wsman_header(
            action="http://x/Bogus", resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
        )
    }
    status, xml = host.handle(xmltodict.unparse(request).encode(), USER, "127.0.0.1")
    assert status == 500 and b"a:ActionNotSupported" in xml
    assert host.handle(b"<not xml", USER, "127.0.0.1")[0] == 500


# ------------------------------------------------------------------------------------------ on the wire


class HostnameAdapter(HTTPAdapter):
    """Connect to the URL's address but do SNI and certificate name validation for `server_hostname`."""

    def __init__(self, server_hostname: str, **kwargs: object) -> None:
        self.server_hostname = server_hostname
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["server_hostname"] = self.server_hostname
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


def winrm_protocol(lab: Lab, name: str, password: str = CREDENTIALS[2], hostname: str | None = None) -> winrm.Protocol:
    """pywinrm as the suite uses it: NTLM, validation against the lab CA and the server's FQDN, by address."""
    state = lab.state(name)
    base = f"https://{state.address}:5986"
    protocol = winrm.Protocol(
        f"{base}/wsman",
        transport="ntlm",
        username=USER,
        password=password,
        server_cert_validation="validate",
        ca_trust_path=str(lab.layout.winrm_ca_file),
    )
    build = protocol.transport.build_session

    def build_session() -> requests.Session:
        # pywinrm calls this for every message and rebuilds its session after close_shell(): mount the adapter
        # once per session. A new adapter per message would mean a new connection, so a new NTLM logon, each time.
        session = build()
        if not isinstance(session.get_adapter(f"{base}/"), HostnameAdapter):
            session.mount(f"{base}/", HostnameAdapter(hostname or state.fqdn))
        return session

    protocol.transport.build_session = build_session  # type: ignore[method-assign]
    return protocol


def run_probe(lab: Lab, name: str, **kwargs: str) -> tuple[bytes, bytes, int]:
    protocol = winrm_protocol(lab, name, **kwargs)
    shell = protocol.open_shell()
    command, args = probe_command()
    command_id = protocol.run_command(shell, command, args)
    result = protocol.get_command_output(shell, command_id)
    protocol.cleanup_command(shell, command_id)
    protocol.close_shell(shell)
    return result


def handshake(address: str, server_name: str, port: int = 444, context: ssl.SSLContext | None = None) -> bytes:
    if context is None:
        # What BE-03 needs: the presented certificate, untrusted; the judges decide.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("port 444 needs root")
    # Addresses of its own, so that a running lab (127.0.10.x) or a parallel run does not collide.
    base = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    root = tmp_path_factory.mktemp("lab")
    built = _build_state(root, [f"{base}.{i + 1}" for i in range(len(lab_scenario().servers))])
    log = (root / "servers.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "exchange_compliance.lab.servers", str(root)], cwd=REPO, stdout=log, stderr=log
    )
    ready = built.layout.state_dir / READY_FILE
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the servers did not come up:\n{(root / 'servers.log').read_text()}")
            time.sleep(0.05)
        yield built
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert not ready.exists()  # the marker goes with the listeners


@pytest.mark.lab
def test_probe_over_winrm_from_every_reachable_server(lab: Lab) -> None:
    for server in lab.scenario.servers:
        if server.unreachable:
            continue
        stdout, stderr, code = run_probe(lab, server.name)
        assert code == 0 and stderr == PROGRESS_CLIXML.encode()
        assert stdout.decode("cp437") == render_probe_output(lab.state(server.name))
        if server.is_edge:
            continue
        probe = parse_probe_output(stdout)
        assert probe.computer_name == server.name
        assert {c.thumbprint for c in probe.certificates} == {
            lab.certs.for_server(server.name, name).thumbprint for name in lab.scenario.store_of(server)
        }


@pytest.mark.lab
def test_winrm_session_run_cmd(lab: Lab) -> None:
    state = lab.state("EX01")
    session = winrm.Session(
        f"https://{state.address}:5986/wsman",
        auth=(USER, CREDENTIALS[2]),
        transport="ntlm",
        server_cert_validation="validate",
        ca_trust_path=str(lab.layout.winrm_ca_file),
    )
    session.protocol = winrm_protocol(lab, "EX01")
    command, args = probe_command()
    response = session.run_cmd(command, args)
    assert response.status_code == 0 and parse_probe_output(response.std_out).computer_name == "EX01"
    unknown = session.run_cmd("hostname")
    assert (unknown.status_code, unknown.std_out) == (1, b"")
    assert unknown.std_err == (
        b"'hostname' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
    )


@pytest.mark.lab
def test_wrong_password_is_refused(lab: Lab) -> None:
    with pytest.raises(InvalidCredentialsError):
        winrm_protocol(lab, "EX01", password="wrong").open_shell()


@pytest.mark.lab
def test_the_winrm_certificate_is_validated_against_the_name(lab: Lab) -> None:
    with pytest.raises(requests.exceptions.SSLError, match=r"match|mismatch"):
        winrm_protocol(lab, "EX01", hostname="ex02.lab.contoso.test").open_shell()
    state = lab.state("EX01")
    # Without the name override the address is checked against the certificate, and fails: the reason for it.
    plain = winrm.Protocol(
        f"https://{state.address}:5986/wsman",
        transport="ntlm",
        username=USER,
        password=CREDENTIALS[2],
        ca_trust_path=str(lab.layout.winrm_ca_file),
    )
    with pytest.raises(requests.exceptions.SSLError):
        plain.open_shell()


@pytest.mark.lab
def test_ntlm_is_bound_to_the_connection(lab: Lab) -> None:
    state = lab.state("EX01")
    url = f"https://{state.address}:5986/wsman"
    # verify per request: Session.request lets REQUESTS_CA_BUNDLE from the environment override session.verify.
    post = {"data": b"<x/>", "headers": {"Content-Type": "application/soap+xml;charset=UTF-8"}}
    post["verify"] = str(lab.layout.winrm_ca_file)
    with requests.Session() as anonymous:
        anonymous.mount(f"https://{state.address}:5986/", HostnameAdapter(state.fqdn))
        refused = anonymous.post(url, **post)
        assert refused.status_code == 401
        assert refused.raw.headers.getlist("WWW-Authenticate") == ["Negotiate", "Kerberos"]
        assert refused.headers["Server"] == "Microsoft-HTTPAPI/2.0"
    with requests.Session() as session:
        session.mount(f"https://{state.address}:5986/", HostnameAdapter(state.fqdn))
        session.auth = HttpNtlmAuth(USER, CREDENTIALS[2])
        first = session.post(url, **post)
        assert first.status_code == 500 and b"SchemaValidationError" in first.content  # authenticated
        assert [r.status_code for r in first.history] == [401, 401]
        # The next request carries no Authorization header: the connection is what is authenticated.
        second = session.post(url, **post)
        assert second.status_code == 500 and second.history == []
        assert "Authorization" not in second.request.headers


@pytest.mark.lab
def test_tls_on_444_presents_the_bound_certificate(lab: Lab) -> None:
    for server in lab.scenario.servers:
        state = lab.state(server.name)
        if server.unreachable or server.is_edge or server.backend_certificate == "none":
            continue
        if server.name == "EX93":
            continue  # its bound certificate has no private key: below
        presented = handshake(state.address, server.fqdn)
        bound = lab.certs.for_server(server.name, server.backend_certificate)
        assert presented == bound.der, server.name
    with (
        socket.create_connection((lab.state("EX01").address, 444), timeout=10) as raw,
        ssl._create_unverified_context().wrap_socket(raw, server_hostname="ex01.lab.contoso.test") as tls,
    ):
        assert tls.version() == "TLSv1.2"  # http.sys on Windows Server 2012 R2-2019
    ex04 = lab.state("EX04")
    assert handshake(ex04.address, "ex04.lab.contoso.test") == lab.certs.shared["thirdparty"].der
    # A client validating the name: EX01's self-signed certificate, pinned, is valid for its FQDN.
    ex01 = lab.state("EX01")
    pinned = ssl.create_default_context(cadata=lab.certs.for_server("EX01", "exchange").pem.decode())
    assert handshake(ex01.address, ex01.fqdn, context=pinned)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ex01.address, "ex02.lab.contoso.test", context=pinned)


@pytest.mark.lab
def test_what_refuses_connections(lab: Lab) -> None:
    def refused(address: str, port: int) -> bool:
        try:
            socket.create_connection((address, port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    unreachable = lab.state("EX90")
    assert refused(unreachable.address, 5986) and refused(unreachable.address, 444)
    assert refused(lab.state("EX92").address, 444)  # no https binding on 444
    assert not refused(lab.state("EX92").address, 5986)
    assert refused(lab.state("EDGE01").address, 444)  # no IIS at all
    # Bound certificate without its private key: http.sys accepts the connection, the handshake fails.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(lab.state("EX93").address, "ex93.lab.contoso.test")


@pytest.mark.lab
def test_latency_is_honoured(lab: Lab) -> None:
    started = time.perf_counter()
    run_probe(lab, "EX01")
    fast = time.perf_counter() - started
    started = time.perf_counter()
    run_probe(lab, "EX91")
    slow = time.perf_counter() - started
    # One TLS accept plus at least seven responses (three for NTLM, Command, Receive, Signal, Delete).
    assert slow >= 8 * 0.25
    assert slow > fast + 1.5
    started = time.perf_counter()
    handshake(lab.state("EX91").address, "ex91.lab.contoso.test")
    assert time.perf_counter() - started >= 0.25


def test_probe_seconds_come_from_the_scenario_or_lab_up_servers(offline: Lab, capsys) -> None:
    from exchange_compliance.lab.__main__ import main as lab_main
    from exchange_compliance.lab.scenario import ScenarioError, generated_servers, parse_scenario

    assert run_command(offline.state("EX94"), PROBE_LINE, False).seconds == 1.5  # type: ignore[union-attr]
    assert run_command(offline.state("EX01"), PROBE_LINE, False).seconds == 0  # type: ignore[union-attr]
    parsed = parse_scenario({"servers": [{"name": "EX01", "probe_seconds": 2, "latency_ms": 150}]}, "s.toml")
    assert (parsed.servers[0].probe_seconds, parsed.servers[0].latency_ms) == (2, 150)
    with pytest.raises(ScenarioError, match=r"s.toml: server EX01: probe_seconds must be a number of at least 0"):
        parse_scenario({"servers": [{"name": "EX01", "probe_seconds": -1}]}, "s.toml")
    assert {(s.latency_ms, s.probe_seconds) for s in generated_servers(5, 150, 2.0)} == {(150, 2.0)}
    with pytest.raises(SystemExit):
        lab_main(["--root", str(offline.layout.root), "up", "--scenario", "healthy", "--probe-seconds", "2"])
    assert "--probe-seconds go with --servers N" in capsys.readouterr().err


def test_a_command_that_runs_for_seconds_answers_receive_only_when_done() -> None:
    # As WinRS does: a Receive is held while the process runs, and answered by the OperationTimeout fault
    # (which pywinrm turns into WinRMOperationTimeoutError and retries) when the process outlasts it.
    protocol, host = _direct_protocol(lambda line, skip: CommandResult("done\r\n", "", 0, seconds=1.6))
    protocol.operation_timeout_sec = 1  # sent as OperationTimeout PT1S
    answers: list[tuple[int, bytes]] = []
    handle = host.handle
    host.handle = lambda *args: answers.append(handle(*args)) or answers[-1]  # type: ignore[method-assign]
    shell = protocol.open_shell()
    command = protocol.run_command(shell, "x")
    started = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):
        protocol.get_command_output_raw(shell, command)
    held = time.monotonic() - started
    out, err, code, done = protocol.get_command_output_raw(shell, command)
    assert 1.0 <= held < 1.5  # the fault comes at OperationTimeout, not earlier and not at the end
    assert time.monotonic() - started >= 1.6
    assert (out, err, code, done) == (b"done\r\n", b"", 0, True)
    status, fault = answers[-2]
    assert status == 500
    assert "<s:Value>s:Receiver</s:Value>" in fault.decode() and "<s:Value>w:TimedOut</s:Value>" in fault.decode()
    assert f'Code="{ERROR_OPERATION_TIMEOUT}"' in fault.decode()
    assert b"cannot complete the operation within the time specified in OperationTimeout." in fault


def test_a_receive_held_for_its_command_ends_when_the_command_is_signalled() -> None:
    protocol, _ = _direct_protocol(lambda line, skip: CommandResult("late", "", 0, seconds=30))
    shell = protocol.open_shell()
    command = protocol.run_command(shell, "x")
    fault: list[BaseException] = []

    def receive() -> None:
        try:
            protocol.get_command_output_raw(shell, command)
        except WSManFaultError as exc:
            fault.append(exc)

    waiting = threading.Thread(target=receive)
    started = time.monotonic()
    waiting.start()
    time.sleep(0.3)
    protocol.cleanup_command(shell, command)  # the held Receive does not keep the shell's other requests waiting
    waiting.join(timeout=5)
    assert time.monotonic() - started < 5 and not waiting.is_alive()
    assert fault and fault[0].wsman_fault_code == ERROR_SHELL_NOT_FOUND  # type: ignore[attr-defined]


@pytest.mark.lab
def test_probe_seconds_hold_the_probe_on_the_server(lab: Lab) -> None:
    protocol = winrm_protocol(lab, "EX94")
    protocol.operation_timeout_sec = 1
    timeouts = 0
    original = protocol.get_command_output_raw

    def counted(shell: str, command: str) -> tuple[bytes, bytes, int, bool]:
        nonlocal timeouts
        try:
            return original(shell, command)
        except WinRMOperationTimeoutError:
            timeouts += 1
            raise

    protocol.get_command_output_raw = counted  # type: ignore[method-assign]
    shell = protocol.open_shell()
    command, args = probe_command()
    started = time.monotonic()
    command_id = protocol.run_command(shell, command, args)
    stdout, _, code = protocol.get_command_output(shell, command_id)
    assert time.monotonic() - started >= 1.5
    assert timeouts == 1  # over HTTPS and NTLM too: one OperationTimeout fault, then the output on that connection
    assert code == 0 and parse_probe_output(stdout).computer_name == "EX94"
    protocol.cleanup_command(shell, command_id)
    protocol.close_shell(shell)
