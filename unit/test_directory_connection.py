"""The directory connection never hands the password to anyone else, and every way a DC can fail is one line.

Fake domain controllers on loopback (fake_dc.py), started and stopped by each test, refer the suite elsewhere,
answer garbage, fake StartTLS or present certificates that must not be trusted. Each case runs the real
`pytest tests_env --org FILE` in a subprocess, with `-l --fulltrace` (a traceback would print the locals of
every frame, ldap3's BindRequest among them), and checks the exit status, the one line that says why, that the
password is nowhere in the output or the reports, and that nothing was written outside the reports directory.
The referred host is a listening port that records every connection: it must get none.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import pytest
from fake_dc import (
    DOMAIN_DN,
    EXCHANGE_DN,
    SEARCH_DONE,
    Answer,
    Certificates,
    FakeDC,
    Listener,
    Reply,
    Request,
    integer,
    make_certificates,
    message,
    org_answer,
    reference,
    result,
    tlv,
)

from conftest import run_suite
from exchange_compliance import snapshot
from exchange_compliance.collect.ldap import REFERRAL_ADVICE, DirectoryUnreachable, open_connection
from exchange_compliance.config import load_org_config

PASSWORD = "Dq7-directory-Secret-4e9a"
SECRETS = {
    "T_LDAP_USER": "svc-audit@lab.test",
    "T_LDAP_PASSWORD": PASSWORD,
    "T_WINRM_USER": "u",
    "T_WINRM_PASSWORD": "w",
}
# A traceback, were there one, with every frame's locals; and everything else the run can say.
LOUD = ("-l", "--fulltrace", "-v", "-rA", "--log-level=DEBUG")
DC1, DC2 = "dc01.lab.test", "dc02.lab.test"
# A base_dn in another domain, long enough that a line cut at 300 characters would lose the advice.
CHILD_DN = f"OU=Servers,OU=Exchange,OU=Tier 1,DC=emea-research,DC=child,{DOMAIN_DN}"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("dc-certificates"), DC1, DC2)


@pytest.fixture
def referred() -> Iterator[Listener]:
    """The host every referral in these tests names."""
    with Listener() as listener:
        yield listener


def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def org_file(
    folder: Path, certificates: Certificates, port: int, *, servers: tuple[str, ...] = (DC1,), extra: str = ""
) -> Path:
    """prod.toml: the DCs at 127.0.0.1 (dc01) and 127.0.0.2 (dc02), EX01 at a loopback address nobody serves."""
    path = folder / "prod.toml"
    listed = ", ".join(f'"{host}"' for host in servers)
    path.write_text(
        f'[directory]\nservers = [{listed}]\nport = {port}\nca_file = "{certificates.ca_file}"\n'
        'user_env = "T_LDAP_USER"\npassword_env = "T_LDAP_PASSWORD"\ntimeout_seconds = 2\n' + extra + "\n"
        '[winrm]\nuser_env = "T_WINRM_USER"\npassword_env = "T_WINRM_PASSWORD"\n\n'
        f'[network]\naddresses = {{ "{DC1}" = "127.0.0.1", "{DC2}" = "127.0.0.2", "ex01.lab.test" = "127.0.0.3" }}\n'
    )
    return path


def files(folder: Path) -> dict[Path, bytes]:
    """Every file below `folder` but in reports/, with its content."""
    found = (path for path in folder.rglob("*") if path.is_file())
    return {path: path.read_bytes() for path in found if path.relative_to(folder).parts[0] != "reports"}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, dict]]:
    """Run tests_env in `tmp_path` against an org file there: (exit status, output, latest.json), having checked
    that the password is nowhere in the output or the reports and that nothing was written outside the reports
    directory."""

    def go(org: Path, *args: str) -> tuple[int, str, dict]:
        environment(monkeypatch)
        # No bytecode of a plugin a test adds beside the org file: the folder is compared file by file.
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
        before = files(tmp_path)
        done = run_suite(tmp_path, None, "--org", str(org), *LOUD, *args)
        output = done.stdout + done.stderr
        assert "Traceback" not in output and "INTERNALERROR" not in output, output
        assert PASSWORD not in output
        reports = tmp_path / "reports" / "prod"
        for path in reports.rglob("*"):
            assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path
        assert files(tmp_path) == before
        return done.ret, output, json.loads((reports / "latest.json").read_text())

    return go


def answered(operation: str, *responses: bytes, target: str | None = None) -> Answer:
    """A healthy DC (org_answer) but for `operation` (at `target`, a search's base DN), answered with `responses`."""

    def answer(request: Request) -> list[bytes] | Reply:
        if request.operation == operation and target in (None, request.target):
            return [message(request.id, response) for response in responses]
        return org_answer(request)

    return answer


def not_checked(output: str) -> str:
    """The one line that says why the org could not be checked, asserted to be said once (and in the verdict)."""
    lines = [line for line in output.splitlines() if line.startswith("exchange-compliance: the org could not")]
    assert len(lines) == 1, output
    reason = lines[0].removeprefix("exchange-compliance: the org could not be checked: ")
    verdict = f"exchange-compliance: prod: NOT CHECKED: the org could not be checked: {reason}"
    assert verdict in output.splitlines(), output
    return reason


# --- referrals ------------------------------------------------------------------------------------------------


def test_a_referral_is_never_followed_and_says_what_to_do(run, tmp_path, certificates, referred):
    # base_dn in another domain of the forest: AD answers the search with result 10 and where to go instead.
    url = f"ldap://127.0.0.1:{referred.port}/{CHILD_DN}"
    with FakeDC(functools.partial(org_answer, refer={CHILD_DN: url}), tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port, extra=f'base_dn = "{CHILD_DN}"\n'))
    assert status == 6, output
    assert not_checked(output) == (
        f"{DC1}: search of {CHILD_DN} was referred to 127.0.0.1:{referred.port}, a naming context this domain "
        f"controller does not hold; referrals are never followed: {REFERRAL_ADVICE}"
    )
    assert referred.connections == 0 and referred.received == b""


def test_a_search_reference_where_an_entry_was_expected_is_a_referral(run, tmp_path, certificates, referred):
    url = f"ldap://127.0.0.1:{referred.port}/{EXCHANGE_DN}"
    answer = answered("search", reference(url), SEARCH_DONE, target=EXCHANGE_DN)
    with FakeDC(answer, tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port))
    assert status == 6, output
    assert not_checked(output).startswith(f"{DC1}: search of {EXCHANGE_DN} was referred to 127.0.0.1:{referred.port}")
    assert referred.connections == 0


def test_a_bind_answered_with_a_referral_sends_nothing_to_the_referred_host(run, tmp_path, certificates, referred):
    answer = answered("bind", result(0x61, 10, "", (f"ldap://127.0.0.1:{referred.port}/",)))
    with FakeDC(answer, tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port))
    assert status == 6, output
    # ldap3's decoder does not know a BindResponse's referral field ([3]): the answer is unreadable to it.
    assert not_checked(output) == (
        f"no domain controller could be bound: {DC1}:{dc.port}: the answer to the bind could not be read (KeyError: 3)"
    )
    assert referred.connections == 0


# --- every failure of a DC is one line ------------------------------------------------------------------------


def start_tls_answered(code: int, diagnostic: str = "", *, notice: bool = False, then: bytes | None = None) -> Answer:
    """A DC that answers StartTLS with `code` (0: go ahead), followed by a notice of disconnection (an unsolicited
    message), or `then` in answer to whatever the client sends next (its TLS ClientHello)."""

    def answer(request: Request) -> list[bytes] | Reply:
        if request.operation != "extended":
            return org_answer(request)
        messages = [message(request.id, result(0x78, code, diagnostic))]
        if notice:
            messages.append(message(0, result(0x78, 52, "going away")))
        return Reply(messages, next_bytes=then)

    return answer


STARTTLS_CASES = {
    "refused": (
        start_tls_answered(52, "TLS is not configured"),
        "StartTLS refused: unavailable (TLS is not configured)",
    ),
    "success, then plain LDAP": (
        start_tls_answered(0, then=message(2, result(0x61))),
        "StartTLS failed: the TLS handshake failed: wrong version number",
    ),
    "success, then garbage": (
        start_tls_answered(0, then=b"\x00\xff not TLS, not LDAP" * 8),
        "StartTLS failed: the TLS handshake failed: wrong version number",
    ),
    "success, then a notice of disconnection": (
        start_tls_answered(0, notice=True),
        "StartTLS failed: unknown unsolicited notification from server",
    ),
}


@pytest.mark.parametrize("case", list(STARTTLS_CASES))
def test_a_starttls_that_fails_or_is_faked_is_one_line_and_no_bind(run, tmp_path, certificates, case):
    answer, reason = STARTTLS_CASES[case]
    with FakeDC(answer) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port, extra='tls = "starttls"\n'))
    assert status == 6, output
    assert not_checked(output) == f"no domain controller could be bound: {DC1}:{dc.port}: {reason}"
    assert "bind" not in dc.seen


@pytest.mark.parametrize(
    ("presented", "tls", "reason"),
    [
        (f"rogue-{DC1}", "ldaps", "certificate verify failed: unable to get local issuer certificate"),
        (DC2, "ldaps", f"the certificate is not issued to {DC1}"),
        (f"rogue-{DC1}", "starttls", "StartTLS failed: certificate verify failed: unable to get local issuer"),
        (DC2, "starttls", f"StartTLS failed: the certificate is not issued to {DC1}"),
    ],
    ids=["untrusted CA", "wrong name", "untrusted CA over StartTLS", "wrong name over StartTLS"],
)
def test_a_certificate_that_must_not_be_trusted_gets_no_password(run, tmp_path, certificates, presented, tls, reason):
    starttls = tls == "starttls"
    with FakeDC(org_answer, tls=certificates.context(presented), starttls=starttls) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port, extra=f'tls = "{tls}"\n'))
    assert status == 6, output
    assert not_checked(output).startswith(f"no domain controller could be bound: {DC1}:{dc.port}: {reason}")
    assert "bind" not in dc.seen


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (
            tlv(0x61, integer(0, tag=0x0A)),
            "the answer to the bind could not be read (IndexError: list index out of range)",
        ),
        (result(0x61, 4242), "the answer to the bind could not be read (KeyError: 4242)"),
    ],
    ids=["no matchedDN (IndexError)", "unknown result code (KeyError)"],
)
def test_a_malformed_bind_response_is_one_line(run, tmp_path, certificates, response, reason):
    with FakeDC(answered("bind", response), tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port))
    assert status == 6, output
    assert not_checked(output) == f"no domain controller could be bound: {DC1}:{dc.port}: {reason}"


def test_a_dc_echoing_the_password_and_terminal_escapes_is_shown_neither(run, tmp_path, certificates):
    # What a DC says goes to the terminal, CI logs and the report: escapes spelled out, the password left out.
    refused = answered("bind", result(0x61, 53, f"\x1b]0;owned\x07\x1b[2J{PASSWORD}\r\nexchange-compliance: PASS"))
    with FakeDC(refused, tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port))
    assert status == 6, output
    assert not_checked(output) == (
        f"no domain controller could be bound: {DC1}:{dc.port}: bind as svc-audit@lab.test refused: "
        "unwillingToPerform (\\x1b]0;owned\\x07\\x1b[2J[password]\\x0d\\x0aexchange-compliance: PASS)"
    )
    assert "\x1b" not in output


def test_a_malformed_answer_in_the_middle_of_the_read_is_one_line(run, tmp_path, certificates):
    with FakeDC(answered("search", result(0x65, 4242), target=EXCHANGE_DN), tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port))
    assert status == 6, output
    assert not_checked(output) == (
        f"{DC1}: search of {EXCHANGE_DN} failed: the answer to the search could not be read (KeyError: 4242)"
    )


def test_a_dc_that_does_not_answer_is_one_line(run, tmp_path, certificates):
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]  # a port that was just open, and now refuses
    status, output, document = run(org_file(tmp_path, certificates, port))
    assert status == 6, output
    assert not_checked(output) == (
        f"no domain controller could be bound: {DC1}:{port}: socket connection error while opening: "
        "[Errno 111] Connection refused"
    )
    assert document["verdict"]["status"] == "unreachable"


def test_an_unbind_that_raises_in_the_error_handler_is_still_one_line(run, tmp_path, certificates):
    # ldap3 can raise from unbind() on a connection a DC has broken (a socket error, a decoding error): a plugin
    # of this run's own makes every unbind raise, and the DC refuses the bind, so the error handler unbinds.
    (tmp_path / "unbind_raises.py").write_text(
        "import sys\nimport ldap3\nfrom ldap3.core.exceptions import LDAPSocketSendError\n\n\n"
        "def unbind(self, controls=None):\n    print('unbind raises', file=sys.stderr)\n"
        "    raise LDAPSocketSendError('socket sending error[Errno 32] Broken pipe')\n\n\n"
        "ldap3.Connection.unbind = unbind\n"
    )
    with FakeDC(answered("bind", result(0x61, 53, "busy")), tls=certificates.context(DC1)) as dc:
        status, output, _ = run(org_file(tmp_path, certificates, dc.port), "-p", "unbind_raises")
    assert status == 6, output
    assert "unbind raises" in output
    assert not_checked(output) == (
        f"no domain controller could be bound: {DC1}:{dc.port}: bind as svc-audit@lab.test refused: "
        "unwillingToPerform (busy)"
    )


# --- the password --------------------------------------------------------------------------------------------


def strings_reachable(root: object) -> Iterator[str | bytes]:
    """Every str and bytes reachable from `root` through attributes, slots and containers (not through classes,
    modules or functions, which lead to the whole interpreter, os.environ included), and each object's repr."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, types.FunctionType, types.MethodType)):
            continue
        seen.add(id(item))
        if isinstance(item, (str, bytes, bytearray)):
            yield bytes(item) if isinstance(item, bytearray) else item
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack += list(item)
        else:
            yield repr(item)
            stack += list(getattr(item, "__dict__", {}).values())
            slots = [name for kind in type(item).__mro__ for name in getattr(kind, "__slots__", ())]
            stack += [getattr(item, name) for name in slots if isinstance(name, str) and hasattr(item, name)]


def test_the_bound_connection_keeps_no_password(tmp_path, certificates, monkeypatch):
    environment(monkeypatch)
    with FakeDC(org_answer, tls=certificates.context(DC1)) as dc:
        config = load_org_config(org_file(tmp_path, certificates, dc.port))
        bound = open_connection(config, config.directory_credentials())
        try:
            assert bound.connection.bound and dc.seen == ["bind"]
            assert [s for s in strings_reachable(bound) if PASSWORD in str(s)] == []
        finally:
            bound.connection.unbind()


def test_the_walk_finds_a_password_ldap3_would_keep(certificates):
    """The check above can fail: a connection bound the way ldap3 does it keeps the password (and the request)."""
    with FakeDC(org_answer, tls=certificates.context(DC1)) as dc:
        tls = ldap3.Tls(validate=ssl.CERT_NONE)
        server = ldap3.Server("127.0.0.1", port=dc.port, use_ssl=True, tls=tls, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, user="u", password=PASSWORD, auto_bind=True)
        try:
            assert any(PASSWORD in str(s) for s in strings_reachable(connection))
        finally:
            connection.unbind()


def test_an_interrupted_bind_leaves_no_frame_holding_the_request(tmp_path, certificates, monkeypatch):
    # Ctrl-C in the middle of the bind: nothing turns it into a reason, so pytest prints it, with `-l` each
    # frame's locals. ldap3's bind frame holds the BindRequest; it must not be among them.
    environment(monkeypatch)

    def interrupted(self, message_id):
        raise KeyboardInterrupt

    monkeypatch.setattr(ldap3.strategy.sync.SyncStrategy, "post_send_single_response", interrupted)
    with FakeDC(org_answer, tls=certificates.context(DC1)) as dc:
        config = load_org_config(org_file(tmp_path, certificates, dc.port))
        with pytest.raises(KeyboardInterrupt) as raised:
            open_connection(config, config.directory_credentials())
    frames = []
    traceback = raised.value.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    assert "bind" not in [frame.f_code.co_name for frame in frames]  # ldap3's Connection.bind
    for frame in frames:
        for name, value in frame.f_locals.items():
            assert PASSWORD not in repr(value), f"{frame.f_code.co_name}: {name}"


def test_a_start_tls_that_says_yes_without_tls_gets_no_password(tmp_path, certificates, monkeypatch):
    # Not what ldap3 does today; the bind checks the socket itself rather than trusting the library's answer.
    environment(monkeypatch)
    monkeypatch.setattr(ldap3.Connection, "start_tls", lambda self, read_server_info=True: True)
    with FakeDC(org_answer) as dc:
        config = load_org_config(org_file(tmp_path, certificates, dc.port, extra='tls = "starttls"\n'))
        with pytest.raises(DirectoryUnreachable, match="TLS is not established on the connection"):
            open_connection(config, config.directory_credentials())
    assert "bind" not in dc.seen


# --- [directory] servers: tried in order ---------------------------------------------------------------------


def test_the_next_dc_is_read_when_the_first_does_not_answer(run, tmp_path, certificates):
    with FakeDC(org_answer, address="127.0.0.2", tls=certificates.context(DC2)) as dc2:  # nothing on 127.0.0.1
        status, output, document = run(org_file(tmp_path, certificates, dc2.port, servers=(DC1, DC2)))
    # The directory was read from dc02; EX01 itself does not answer (nothing serves 127.0.0.3): exit 6 for that.
    assert status == 6 and "no checked Exchange server answered" in output, output
    skipped = f"{DC1}:{dc2.port}: socket connection error while opening: [Errno 111] Connection refused"
    assert document["domain_controller"] == DC2 and document["skipped_controllers"] == [skipped]
    html = (tmp_path / "reports" / "prod" / "latest.html").read_text()
    assert f"Domain controller</td><td>{DC2} ({DC1}:{dc2.port} skipped: socket connection error" in html
    evidence = snapshot.read(tmp_path / "reports" / "prod" / "latest-facts.json").directory
    assert evidence.domain_controller == DC2 and evidence.skipped_controllers == (skipped,)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ({"tls": f"rogue-{DC1}"}, "certificate verify failed: unable to get local issuer certificate"),
        ({"tls": DC1, "answer": answered("bind", result(0x61, 4242))}, "the answer to the bind could not be read"),
        (
            {"tls": DC1, "answer": answered("bind", result(0x61, 53, "busy"))},
            "bind as svc-audit@lab.test refused: unwillingToPerform (busy)",
        ),
    ],
    ids=["untrusted certificate", "malformed bind response", "bind refused"],
)
def test_the_next_dc_is_read_when_the_first_fails_the_tls_or_the_bind(run, tmp_path, certificates, first, reason):
    with (
        FakeDC(first.get("answer", org_answer), tls=certificates.context(first["tls"])) as dc1,
        FakeDC(org_answer, address="127.0.0.2", port=dc1.port, tls=certificates.context(DC2)) as dc2,
    ):
        status, output, document = run(org_file(tmp_path, certificates, dc1.port, servers=(DC1, DC2)))
    assert status == 6 and "no checked Exchange server answered" in output, output
    assert document["domain_controller"] == DC2
    (skipped,) = document["skipped_controllers"]
    assert skipped.startswith(f"{DC1}:{dc1.port}: {reason}")
    assert f"directory: {DC2} ({skipped} skipped): org 'Contoso'" in output
    assert dc2.seen[0] == "bind" and "search" in dc2.seen


def test_when_every_dc_fails_the_line_names_each_and_why(run, tmp_path, certificates):
    with FakeDC(org_answer, address="127.0.0.2", tls=certificates.context(DC1)) as dc2:  # dc02 presents dc01's
        status, output, document = run(org_file(tmp_path, certificates, dc2.port, servers=(DC1, DC2)))
    assert status == 6, output
    assert not_checked(output) == (
        f"no domain controller could be bound: {DC1}:{dc2.port}: socket connection error while opening: "
        f"[Errno 111] Connection refused; {DC2}:{dc2.port}: the certificate is not issued to {DC2}"
    )
    assert document["rows"] == [] and document["verdict"]["status"] == "unreachable"


def test_a_wrong_password_is_not_tried_on_the_next_dc(run, tmp_path, certificates):
    # invalidCredentials holds for the whole domain: another DC would only count one more bad logon towards
    # the account's lockout.
    refused = answered(
        "bind", result(0x61, 49, "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e")
    )
    with (
        FakeDC(refused, tls=certificates.context(DC1)) as dc1,
        FakeDC(org_answer, address="127.0.0.2", port=dc1.port, tls=certificates.context(DC2)) as dc2,
    ):
        status, output, _ = run(org_file(tmp_path, certificates, dc1.port, servers=(DC1, DC2)))
    assert status == 6, output
    assert not_checked(output).startswith(
        f"no domain controller could be bound: {DC1}:{dc1.port}: bind as svc-audit@lab.test refused: "
        "invalidCredentials (80090308: LdapErr"
    )
    assert not_checked(output).endswith(f"; not tried: {DC2}")
    assert dc2.seen == []
