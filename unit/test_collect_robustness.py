"""One server's trouble is that server's alone, and never keeps a run from ending.

Fake WinRM endpoints in this process (plain HTTP, one loopback address each) answer as a misbehaving server
or proxy would; the org's directory is stubbed, so only the servers are under test. The runs that could hang
are made in a subprocess, timed to its exit: a nightly run must end, not just return from collect_org.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_dc import make_certificates

from conftest import CREDENTIALS
from exchange_compliance import collect
from exchange_compliance.collect import winrm
from exchange_compliance.collect.ldap import Bound
from exchange_compliance.config import load_org_config
from exchange_compliance.facts import Handshake, ServerProbe, Unavailable

# The fakes are trusted through the org config's ca_file: pywinrm's notice about an environment-defined CA bundle
# says nothing here.
pytestmark = pytest.mark.filterwarnings("ignore:'pywinrm' will use an environment variable defined CA Trust")
UNIT = Path(__file__).resolve().parent
DOMAIN = "lab.contoso.test"  # factories.server's
DOCUMENT = json.dumps({"probe": 1, "computer": "EX01", "certificates": [], "bindings": [], "http": []})
SOAP = "http://www.w3.org/2003/05/soap-envelope"
OPERATION_TIMEOUT = (  # what a Receive answers while the command still runs (WSManFault 2150858793)
    f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code>'
    '<s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation within the time '
    "specified in OperationTimeout.</s:Text></s:Reason><s:Detail><f:WSManFault "
    'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793" Machine="ex">'
    "<f:Message>timeout</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"
)
Reply = tuple[int, str, str] | None  # status, content type, body; None: never answer


def envelope(body: str) -> str:
    return f'<s:Envelope xmlns:s="{SOAP}"><s:Body>{body}</s:Body></s:Envelope>'


def done(stdout: str, name: str | None = "stdout") -> str:
    attribute = f' Name="{name}"' if name else ""
    stream = f'<Stream{attribute} CommandId="C1">{base64.b64encode(stdout.encode()).decode()}</Stream>'
    return envelope(
        f'<ReceiveResponse>{stream}<CommandState CommandId="C1" State="{winrm_done()}"><ExitCode>0</ExitCode>'
        "</CommandState></ReceiveResponse>"
    )


def winrm_done() -> str:
    return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"


def healthy(action: str, receive: str = "") -> Reply:
    """A Windows server running the probe: a shell, a command, its document; Signal and Delete acknowledged."""
    xml = "application/soap+xml;charset=UTF-8"
    if action == "Create":
        return 200, xml, envelope('<Shell><Selector Name="ShellId">S1</Selector></Shell>')
    if action == "Command":
        return 200, xml, envelope("<CommandResponse><CommandId>C1</CommandId></CommandResponse>")
    if action == "Receive":
        return 200, xml, receive or done(DOCUMENT)
    return 200, xml, envelope("")


def still_running(action: str) -> Reply:
    """The probe hangs on the server: every Receive is an OperationTimeout, which pywinrm retries forever."""
    if action == "Receive":
        time.sleep(0.1)  # a real server waits OperationTimeout first
        return 500, "application/soap+xml;charset=UTF-8", OPERATION_TIMEOUT
    return healthy(action)


def never_done(action: str) -> Reply:
    """Still running, and the server no longer answers the Signal and Delete that would clean up."""
    return None if action in ("Signal", "Delete") else still_running(action)


def proxy_page(_action: str) -> Reply:
    """A proxy in the way that answers everything with its login page, status 200."""
    return 200, "text/html", '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign in</title></head></html>'


def nameless_stream(action: str) -> Reply:
    """Output streams without their Name attribute: pywinrm's parser raises KeyError."""
    return healthy(action, receive=done(DOCUMENT, name=None))


class FakeWinRM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: str, port: int, behaviour: Callable[[str], Reply], stop: threading.Event, tls: ssl.SSLContext
    ) -> None:
        self.behaviour, self.stop = behaviour, stop
        super().__init__((address, port), _Handler)
        # HTTPS, as the org config must have it for basic authentication; the handshake is made in the
        # connection's own thread, so that one stuck client never holds up the others.
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeWinRM  # type: ignore[assignment]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        action = re.search(r"Action[^>]*>([^<]+)<", body)
        reply = self.server.behaviour(action.group(1).rsplit("/", 1)[-1] if action else "")
        if reply is None:
            self.server.stop.wait()
            return
        status, content_type, text = reply
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """`org({"EX01": healthy, "EX02": never_done}, server_timeout=2)`: fake servers, and an org config naming them."""
    stop = threading.Event()
    fakes: list[FakeWinRM] = []
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    def make(behaviours: dict[str, Callable[[str], Reply]], server_timeout: float = 10, read_timeout: int = 30) -> Path:
        port = 0
        addresses = {}
        hosts = [f"{name.lower()}.{DOMAIN}" for name in behaviours]
        certificates = make_certificates(tmp_path / "tls", *hosts)
        for number, (name, behaviour) in enumerate(behaviours.items(), 1):
            address = f"127.0.77.{number}"
            fake = FakeWinRM(address, port, behaviour, stop, certificates.context(hosts[number - 1]))
            port = fake.server_address[1]  # the same port on every address: the config has one
            fakes.append(fake)
            threading.Thread(target=fake.serve_forever, daemon=True).start()
            addresses[f"{name.lower()}.{DOMAIN}"] = address
        table = ", ".join(f'"{host}" = "{address}"' for host, address in addresses.items())
        path = tmp_path / "fake.toml"
        path.write_text(
            '[directory]\nservers = ["127.0.0.1"]\nport = 1\nuser_env = "T_LDAP_USER"\n'
            'password_env = "T_LDAP_PASSWORD"\n'
            f'\n[winrm]\ntransport = "basic"\nport = {port}\nca_file = "{certificates.ca_file}"\n'
            'user_env = "T_WINRM_USER"\n'
            f'password_env = "T_WINRM_PASSWORD"\nread_timeout_seconds = {read_timeout}\n'
            f"operation_timeout_seconds = {read_timeout - 1}\n\n[network]\naddresses = {{ {table} }}\n\n"
            f"[collection]\nserver_timeout_seconds = {server_timeout}\n"
        )
        return path

    yield make
    stop.set()
    for fake in fakes:
        fake.shutdown()
        fake.server_close()


# The collection in a process of its own, with the directory stubbed: its facts, and when it ended.
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import factories
from exchange_compliance import collect
from exchange_compliance.collect.ldap import Bound
from exchange_compliance.config import load_org_config

names = sys.argv[3].split(",")
directory = factories.directory(tuple(factories.server(name) for name in names))


class Reader:
    round_trips = 0

    def __init__(self, *args):
        pass

    def read(self):
        return directory


class Connection:
    usage = None

    def unbind(self):
        pass


collect.open_connection = lambda config, credentials: Bound(Connection(), "127.0.0.1")
collect.DirectoryReader = Reader
facts = collect.collect_org(load_org_config(sys.argv[2]))
print(json.dumps({name: getattr(fact, "reason", "probed") for name, fact in facts.probes.items()}), flush=True)
"""


def collect_in_subprocess(config: Path, names: list[str], limit: float) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    try:
        finished = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(UNIT), str(config), ",".join(names)],
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the collecting process did not exit within {limit} s; it printed {exc.stdout!r}")
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1]), time.monotonic() - started


def stub_directory(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    import factories

    directory = factories.directory(tuple(factories.server(name) for name in names))
    connection = type("Connection", (), {"usage": None, "unbind": lambda self: None})
    monkeypatch.setattr(collect, "open_connection", lambda config, credentials: Bound(connection(), "127.0.0.1"))
    reader = type("R", (), {"read": lambda self: directory, "round_trips": 0})
    monkeypatch.setattr(collect, "DirectoryReader", lambda *args: reader())


# --- a surprise on one server stays on that server ---------------------------------------------------------------


def test_a_proxy_page_and_a_pywinrm_key_error_are_their_servers_alone(org, monkeypatch):
    config = load_org_config(org({"EX01": healthy, "EX02": proxy_page, "EX03": nameless_stream}))
    stub_directory(monkeypatch, "EX01", "EX02", "EX03")
    facts = collect.collect_org(config)
    assert isinstance(facts.probes["EX01"], ServerProbe), facts.probes["EX01"]
    assert facts.probes["EX02"] == Unavailable("winrm", "EX02", facts.probes["EX02"].reason)
    assert facts.probes["EX02"].reason.startswith("ParseError: ")
    assert facts.probes["EX03"].reason == "KeyError: 'Name'"
    assert list(facts.unreachable()) == ["EX01", "EX02", "EX03"]  # and 444: nothing listens on the fakes


def test_any_exception_of_a_probe_or_handshake_becomes_unavailable(monkeypatch):
    import factories
    import spnego.exceptions

    def probe(host, config, credentials, deadline):
        if host.startswith("ex02"):
            raise spnego.exceptions.InvalidTokenError(context_msg="a broken NTLM challenge")
        return factories.probe()

    def handshake(host, address, timeout, port):
        if host.startswith("ex01"):
            raise RuntimeError("boom\nsecond line")
        return Handshake(host, address, port, b"\x30\x00")

    monkeypatch.setattr(collect, "run_probe", probe)
    monkeypatch.setattr(collect, "fetch_certificate", handshake, raising=False)
    config = load_org_config(UNIT.parent / "orgs" / "example-prod.toml")
    servers = (factories.server("EX01"), factories.server("EX02"))
    probes, handshakes = collect.collect_servers(servers, config, None)
    assert isinstance(probes["EX01"], ServerProbe) and probes["EX02"].source == "winrm"
    assert probes["EX02"].reason.startswith("InvalidTokenError: ") and "broken NTLM" in probes["EX02"].reason
    assert handshakes["EX01"] == Unavailable("tls", "EX01", "RuntimeError: boom")
    assert handshakes["EX02"].port == 444


# --- a server that never finishes does not keep the run from ending -----------------------------------------------


def test_a_probe_that_never_finishes_ends_at_the_deadline_and_so_does_the_process(org):
    config = org({"EX01": healthy, "EX02": never_done}, server_timeout=2)
    reasons, elapsed = collect_in_subprocess(config, ["EX01", "EX02"], limit=30)
    assert reasons == {"EX01": "probed", "EX02": "no answer within the server timeout (2 s)"}
    # The probe's own cleanup would wait 5 s on each of Signal and Delete: its daemon thread does not hold
    # the process, which ends with the deadline (plus interpreter start-up).
    assert elapsed < 2 + 4, elapsed


def test_a_server_that_never_answers_does_not_outlive_the_deadline(org):
    config = org({"EX01": lambda action: None, "EX02": healthy}, server_timeout=2, read_timeout=600)
    reasons, elapsed = collect_in_subprocess(config, ["EX01", "EX02"], limit=30)
    assert reasons == {"EX01": "no answer within the server timeout (2 s)", "EX02": "probed"}
    assert elapsed < 2 + 4, elapsed


def test_the_probe_itself_gives_up_at_its_deadline(org):
    actions: list[str] = []

    def recorded(action: str) -> Reply:
        actions.append(action)
        return still_running(action)

    config = load_org_config(org({"EX01": recorded}, server_timeout=60))
    started = time.monotonic()
    with pytest.raises(winrm.ProbeFailed, match=r"no answer within the server timeout \(60 s\)"):
        winrm.run_probe(f"ex01.{DOMAIN}", config, config.winrm_credentials(), deadline=time.monotonic() + 1.5)
    assert time.monotonic() - started < 1.5 + 1
    # Then it stopped the hung command and closed the shell, so nothing is left running on the server.
    assert actions[:2] == ["Create", "Command"] and actions[-2:] == ["Signal", "Delete"]


def test_a_slow_job_does_not_hold_up_the_servers_queued_behind_it(org, monkeypatch):
    names = ["EX01", "EX02", "EX03", "EX04"]
    path = org({"EX01": still_running, "EX02": healthy, "EX03": healthy, "EX04": healthy}, server_timeout=2)
    path.write_text(path.read_text().replace("server_timeout_seconds", "max_workers = 1\nserver_timeout_seconds"))
    stub_directory(monkeypatch, *names)
    started = time.monotonic()
    facts = collect.collect_org(load_org_config(path))
    assert [n for n in names if isinstance(facts.probes[n], ServerProbe)] == ["EX02", "EX03", "EX04"]
    assert time.monotonic() - started < 2 * 5  # each waits its turn, and each has its own deadline


# --- the directory: a read broken off, a value that cannot be read ------------------------------------------------

CONFIGURATION = "CN=Configuration,DC=contoso,DC=test"
EXCHANGE = f"CN=Microsoft Exchange,CN=Services,{CONFIGURATION}"
ORG_DN = f"CN=Contoso,{EXCHANGE}"
COMPUTER_DN = "CN=EX01,CN=Computers,DC=contoso,DC=test"


def entry(dn: str, **attributes: bytes) -> dict:
    return {"type": "searchResEntry", "dn": dn, "raw_attributes": {k: [v] for k, v in attributes.items()}}


def org_entries(search_filter: str, base: str) -> list[dict]:
    """An Exchange org as far as the computer accounts; EX01's computer comes without its objectSid."""
    if base == "":
        return [
            entry("", configurationNamingContext=CONFIGURATION.encode(), defaultNamingContext=b"DC=contoso,DC=test")
        ]
    if base == EXCHANGE and "msExchOrganizationContainer" in search_filter:
        return [entry(ORG_DN, cn=b"Contoso")]
    if base == EXCHANGE:
        return [entry(EXCHANGE)]
    if "msExchExchangeServer" in search_filter:
        return [entry(f"CN=EX01,CN=Servers,{ORG_DN}", cn=b"EX01", networkAddress=b"ncacn_ip_tcp:ex01.contoso.test")]
    if "objectCategory=computer" in search_filter:
        return [entry(COMPUTER_DN, sAMAccountName=b"EX01$", dNSHostName=b"ex01.contoso.test")]
    return []


class FakeConnection:
    """What DirectoryReader uses of an ldap3 connection; `fail` raises as ldap3 does for a broken socket."""

    def __init__(self, fail: Callable[[str], Exception | None] = lambda base: None) -> None:
        self.fail, self.result = fail, {"result": 0}
        self.extend = type("Extend", (), {"standard": self})()

    def paged_search(self, base: str, search_filter: str, *args: object, **kwargs: object) -> list[dict]:
        error = self.fail(base)
        if error is not None:
            raise error
        return org_entries(search_filter, base)


def read_error(connection: FakeConnection) -> str:
    from exchange_compliance.collect.directory import DirectoryReader
    from exchange_compliance.collect.ldap import DirectoryError

    with pytest.raises(DirectoryError) as caught:
        DirectoryReader(connection).read()
    return str(caught.value)


def test_a_receive_timeout_names_the_search_and_the_reason():
    from ldap3.core.exceptions import LDAPSocketReceiveError

    message = read_error(FakeConnection(lambda base: LDAPSocketReceiveError("error receiving data: timed out")))
    assert message == "search of the rootDSE failed: error receiving data: timed out"


def test_a_connection_reset_in_the_middle_of_the_read_names_that_search():
    from ldap3.core.exceptions import LDAPSessionTerminatedByServerError

    def fail(base: str) -> Exception | None:
        reset = LDAPSessionTerminatedByServerError("session terminated by server")
        return reset if base == ORG_DN else None

    assert read_error(FakeConnection(fail)) == f"search of {ORG_DN} failed: session terminated by server"


def test_a_principal_without_a_readable_sid_stops_the_read_naming_the_entry():
    message = read_error(FakeConnection())
    assert message.startswith(f"{COMPUTER_DN}: cannot read this computer: no objectSid")


def test_a_directory_broken_off_mid_read_is_exit_6_with_one_line(suite, pytester):
    # A plugin of this run's own replaces the LDAP connection, as a DC that stops answering would leave it.
    pytester.makepyfile(
        broken_dc="""
        from ldap3.core.exceptions import LDAPSocketReceiveError
        from exchange_compliance import collect
        from exchange_compliance.collect.ldap import Bound

        class Connection:
            usage = None
            result = None

            def __init__(self):
                self.extend = type("Extend", (), {"standard": self})()

            def paged_search(self, base, *args, **kwargs):
                raise LDAPSocketReceiveError("error receiving data: timed out")

            def unbind(self):
                raise LDAPSocketReceiveError("connection closed")  # ldap3 after a socket error

        collect.open_connection = lambda config, credentials: Bound(Connection(), "127.0.0.1")
        """
    )
    from conftest import live_org

    run = suite(None, "-p", "broken_dc", "--org", str(live_org(pytester.path)), env=CREDENTIALS)
    output = run.stdout + run.stderr
    assert run.ret == 6, output
    reason = "127.0.0.1: search of the rootDSE failed: error receiving data: timed out"
    assert f"the org could not be checked: {reason}" in output
    assert "Traceback" not in output and "INTERNALERROR" not in output


# --- the audit host's CPU: a thousand servers are probed at once ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:'pywinrm' will use an environment defined proxy")
def test_the_environment_is_read_once_per_server_and_its_proxy_still_used(org, monkeypatch):
    import urllib.request

    config = load_org_config(org({"EX01": healthy}))
    reads = 0
    original = urllib.request.getproxies_environment

    def counted() -> dict[str, str]:
        nonlocal reads
        reads += 1
        return original()

    monkeypatch.setattr(urllib.request, "getproxies_environment", counted)
    winrm.run_probe(f"ex01.{DOMAIN}", config, config.winrm_credentials())
    assert reads <= 2  # when pywinrm builds the session; not again for each of the probe's requests
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.contoso.test:3128")
    session = winrm.open_protocol(f"ex01.{DOMAIN}", config, config.winrm_credentials()).transport.build_session()
    assert session.proxies.get("http") == "http://proxy.contoso.test:3128" and not session.trust_env
    monkeypatch.setenv("NO_PROXY", "127.0.77.1")
    session = winrm.open_protocol(f"ex01.{DOMAIN}", config, config.winrm_credentials()).transport.build_session()
    assert "http" not in session.proxies


def test_an_org_whose_probe_takes_seconds_is_probed_all_at_once_by_default(org, monkeypatch):
    # A real server spends seconds in PowerShell before its probe answers: with the default [collection]
    # max_workers every server of a 200-server org waits at once, not in batches behind each other.
    names = [f"EX{number:02d}" for number in range(1, 41)]
    arrived = threading.Condition()
    running = peak = 0

    def seconds_of_powershell(action: str) -> Reply:
        # Each Receive is held until every server's has come (as long as it takes; at most 10 s, which with the
        # old default of 16 workers is what the first 16 waited before answering, and the test failed).
        nonlocal running, peak
        if action == "Receive":
            with arrived:
                running += 1
                peak = max(peak, running)
                arrived.notify_all()
                arrived.wait_for(lambda: peak == len(names), timeout=10)
        return healthy(action)

    config = load_org_config(org(dict.fromkeys(names, seconds_of_powershell)))
    stub_directory(monkeypatch, *names)
    facts = collect.collect_org(config)
    assert all(isinstance(facts.probes[name], ServerProbe) for name in names)
    assert peak == len(names)
    assert config.max_workers >= 200


def test_a_probe_that_ended_is_closed_with_its_shell_alone(org):
    # Deleting the shell ends the command that ran in it: the Signal is for a command still running.
    actions: list[str] = []

    def recorded(action: str) -> Reply:
        actions.append(action)
        return healthy(action)

    config = load_org_config(org({"EX01": recorded}))
    assert isinstance(winrm.run_probe(f"ex01.{DOMAIN}", config, config.winrm_credentials()), ServerProbe)
    assert actions == ["Create", "Command", "Receive", "Delete"]
