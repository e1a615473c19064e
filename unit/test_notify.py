"""[notify]: a message after a run, by mail and to a webhook, checked against real servers on loopback that the
tests start and stop: aiosmtpd (plain, STARTTLS and TLS with a test CA) and an http.server receiver."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import ORG, TESTS_ENV, build_org, judged_run, live_org
from exchange_compliance import snapshot
from exchange_compliance.config import ConfigError, NotifySettings, SmtpSettings, load_org_config
from exchange_compliance.plugin import notify
from exchange_compliance.plugin.history import Changes, PastRun
from exchange_compliance.plugin.results import Row

PASSWORD = "s3cret-Pa55word"  # must never be printed
TOKEN = "T0KEN-in-the-url-abc123"  # a Teams or Slack URL's secret part


def body_of(mail: email.message.EmailMessage) -> str:
    return mail.get_content().replace("\r\n", "\n")  # sent with SMTP's line ends


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the servers -----------------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    mails: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))  # type: ignore[attr-defined]
        mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)  # type: ignore[attr-defined]
        self.mails.append(mail)  # type: ignore[arg-type]
        return "250 OK"


def start_smtp(**kwargs: object) -> tuple[Controller, Mailbox]:
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port, **kwargs)
    controller.start()
    return controller, box


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    controller, box = start_smtp()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    from fake_dc import make_certificates

    return make_certificates(tmp_path_factory.mktemp("smtp-certs"), "localhost")


def authenticator(box: Mailbox):
    def check(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
        if isinstance(data, LoginPassword):
            box.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=data.password.decode() == PASSWORD, handled=False)
        return AuthResult(success=False, handled=False)

    return check


@dataclass
class Receiver:
    port: int
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answer: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhookb2/{TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.posts.append((self.path, dict(self.headers), body))
            self.send_response(found.answer)
            self.end_headers()
            self.wfile.write(b"1")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()
    thread.join()


# --- what is sent, sent in-process -----------------------------------------------------------------------------


def row(requirement: str, server: str | None, outcome: str = "failed", **kwargs: object) -> Row:
    return Row(requirement, "title", server, outcome, "critical", "evidence", "fix", "source", **kwargs)  # type: ignore[arg-type]


FAILING = [
    row("BE-02", "EX02", failing_since="2026-11-03T02:30:00+00:00", failing_runs=12),
    row("AUTH-02", "EX01", "error", failing_since="2026-11-22T02:30:00+00:00", failing_runs=1),
]
RESOLVED = [row("EWS-01", "EX03", "passed")]
CHANGES = Changes("2026-11-21T02:30:00+00:00", [FAILING[1]], RESOLVED, [FAILING[0]], [])
REPORT = Path("/opt/exchange-compliance/reports/prod/20261122-023000.html")


def plain_smtp(port: int, **kwargs: object) -> SmtpSettings:
    values = {"host": "127.0.0.1", "port": port, "security": "none", "user_env": None, "password_env": None}
    values |= {"ca_file": None, "sender": "excompliance@contoso.test", "recipients": ("exchange-admins@contoso.test",)}
    return SmtpSettings(**(values | kwargs))  # type: ignore[arg-type]


def settings(smtp: SmtpSettings | None = None, webhook: str | None = None, on: str = "always") -> NotifySettings:
    return NotifySettings(on, smtp, webhook, timeout_seconds=10)


@dataclass
class Said:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def send(config: NotifySettings, judged: object, last: PastRun | None = None) -> Said:
    said = Said()
    notify.after_run(config, judged, last, REPORT, said.lines.append, said.warnings.append)  # type: ignore[arg-type]
    return said


def test_the_mail_names_the_verdict_the_changes_and_the_report(mailbox):
    said = send(settings(plain_smtp(mailbox.port)), judged_run(FAILING + RESOLVED, changes=CHANGES))
    assert said.warnings == [] and said.lines == [
        f"notified: email to exchange-admins@contoso.test via 127.0.0.1:{mailbox.port}"
    ]
    (mail,) = mailbox.mails
    assert mailbox.envelopes == [("excompliance@contoso.test", ["exchange-admins@contoso.test"])]
    assert mail["Subject"].startswith(f"{ORG}: FAIL: 2 blocking at or above high: ")
    assert mail["From"] == "excompliance@contoso.test" and mail["To"] == "exchange-admins@contoso.test"
    body = body_of(mail)
    assert body.splitlines()[0] == f"{ORG}: FAIL: 2 blocking at or above high: " + (
        "BE-02 on EX02 (critical, failed), AUTH-02 on EX01 (critical, error)"
    )
    assert "Since the last run (2026-11-21 02:30:00 UTC): 1 new failures, 1 resolved, 1 still failing" in body
    assert "New failures (1):\n  AUTH-02 on EX01 (critical, could not be checked)\n" in body
    assert "Resolved (1):\n  EWS-01 on EX03 (critical, passed)\n" in body
    assert "Still failing (1):\n  BE-02 on EX02 (critical, failed), failing for 12 runs, since 2026-11-03\n" in body
    assert "Rows: 1 failed, 1 could not be checked, 1 passed" in body
    assert f"Report: {REPORT}" in body


def test_long_lists_are_counted_past_the_limit(mailbox):
    many = [row("BE-02", f"EX{n:03d}") for n in range(notify.NAMES_LIMIT + 5)]
    send(settings(plain_smtp(mailbox.port)), judged_run(many))
    body = body_of(mailbox.mails[0])
    assert "No earlier run of this org to compare with." in body
    assert f"Failing ({len(many)}):" in body and "  and 5 more" in body
    assert body.count("  BE-02 on EX") == notify.NAMES_LIMIT


HOSTILE = "EX01\r\nBcc: victim@evil.test\r\n\r\n<!channel> <https://evil.test|click> & \x1b[2J\u2028"


def test_a_name_from_ad_cannot_add_a_header_a_line_or_markup(mailbox, receiver):
    rows = [row("BE-02", HOSTILE)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("T_HOOK", receiver.url)
        said = send(settings(plain_smtp(mailbox.port), "T_HOOK"), judged_run(rows))
    assert said.warnings == []
    (mail,) = mailbox.mails
    assert mail["Bcc"] is None and mailbox.envelopes[0][1] == ["exchange-admins@contoso.test"]
    assert sorted(mail.keys()) == sorted(["Subject", "From", "To", "Date", "Message-ID", *_mime_headers(mail)])
    assert "\n" not in mail["Subject"] and "EX01\\x0d\\x0aBcc: victim@evil.test" in mail["Subject"]
    body = body_of(mail)
    assert "BE-02 on EX01\\x0d\\x0aBcc: victim@evil.test\\x0d\\x0a\\x0d\\x0a<!channel>" in body and "\x1b" not in body
    assert "& \\x1b[2J\\u2028" in body  # spelled out, as everywhere the suite prints data
    ((_path, _headers, raw),) = receiver.posts
    posted = json.loads(raw)
    assert (
        "<!channel>" not in posted["text"]
        and "&lt;!channel&gt; &lt;https://evil.test|click&gt; &amp;" in posted["text"]
    )
    assert posted["failing"]["rows"] == [notify.clean(f"BE-02 on {HOSTILE} (critical, failed)")]
    assert "\r" not in posted["failing"]["rows"][0] and "\x1b" not in posted["failing"]["rows"][0]


def _mime_headers(mail: email.message.EmailMessage) -> list[str]:
    return [name for name in mail if name.lower().startswith(("content-", "mime-"))]


def test_the_webhook_gets_text_for_teams_and_slack_and_structured_fields(receiver, monkeypatch):
    monkeypatch.setenv("T_HOOK", receiver.url)
    said = send(settings(webhook="T_HOOK"), judged_run(FAILING + RESOLVED, changes=CHANGES))
    assert said.warnings == [] and said.lines == ["notified: the webhook ($T_HOOK)"]
    ((path, headers, raw),) = receiver.posts
    assert path == f"/webhookb2/{TOKEN}" and headers["Content-Type"].startswith("application/json")
    posted = json.loads(raw)
    assert posted["text"].startswith(f"{ORG}: FAIL: 2 blocking at or above high: ")
    assert (
        "Still failing (1):\n  BE-02 on EX02 (critical, failed), failing for 12 runs, since 2026-11-03"
        in (posted["text"])
    )
    assert posted["org"] == ORG and posted["verdict"]["status"] == "fail" and posted["report"] == str(REPORT)
    assert posted["new_failures"] == {"count": 1, "rows": ["AUTH-02 on EX01 (critical, could not be checked)"]}
    assert posted["resolved"]["count"] == 1 and posted["still_failing"]["count"] == 1
    assert posted["rows"] == {"failed": 1, "error": 1, "waived": 0, "passed": 1, "not_applicable": 0}


def test_starttls_with_the_test_ca_and_a_login(certificates, monkeypatch):
    box = Mailbox(free_port())
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, tls_context=certificates.context("localhost"),
        require_starttls=True, authenticator=authenticator(box), auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        monkeypatch.setenv("T_SMTP_USER", "excompliance")
        monkeypatch.setenv("T_SMTP_PASSWORD", PASSWORD)
        smtp = plain_smtp(box.port, host="localhost", security="starttls", ca_file=certificates.ca_file)
        said = send(
            settings(replace(smtp, user_env="T_SMTP_USER", password_env="T_SMTP_PASSWORD")), judged_run(FAILING)
        )
        assert said.warnings == [] and len(box.mails) == 1 and box.logins == [("excompliance", PASSWORD)]
        # The same server, the CA not given: the system store does not know it.
        said = send(settings(replace(smtp, ca_file=None)), judged_run(FAILING))
        assert said.warnings == [
            f"notify: email via localhost:{box.port}: not sent: certificate not trusted: unable to get local issuer "
            "certificate"
        ]
        assert len(box.mails) == 1
    finally:
        controller.stop()


def test_starttls_to_a_certificate_of_another_ca_is_refused(certificates):
    controller, box = start_smtp(tls_context=certificates.context("rogue-localhost"), require_starttls=True)
    try:
        smtp = plain_smtp(box.port, host="localhost", security="starttls", ca_file=certificates.ca_file)
        said = send(settings(smtp), judged_run(FAILING))
        assert said.warnings == [
            f"notify: email via localhost:{box.port}: not sent: certificate not trusted: unable to get local issuer "
            "certificate"
        ]
        assert box.mails == []
    finally:
        controller.stop()


def test_a_server_without_starttls_is_not_sent_to_in_clear(mailbox):
    said = send(settings(plain_smtp(mailbox.port, host="localhost", security="starttls")), judged_run(FAILING))
    assert said.warnings == [
        f"notify: email via localhost:{mailbox.port}: not sent: the server does not offer STARTTLS"
    ]
    assert mailbox.mails == []


def test_implicit_tls_with_the_test_ca_checks_the_host_name(certificates):
    controller, box = start_smtp(ssl_context=certificates.context("localhost"))
    try:
        smtp = plain_smtp(box.port, host="localhost", security="tls", ca_file=certificates.ca_file)
        assert send(settings(smtp), judged_run(FAILING)).warnings == [] and len(box.mails) == 1
        # 127.0.0.1 is not a name the certificate holds.
        said = send(settings(replace(smtp, host="127.0.0.1")), judged_run(FAILING))
        assert said.warnings == [
            f"notify: email via 127.0.0.1:{box.port}: not sent: certificate not trusted: IP address mismatch, "
            "certificate is not valid for '127.0.0.1'."
        ]
    finally:
        controller.stop()


def test_a_refused_login_is_one_line_without_the_password(certificates, monkeypatch):
    box = Mailbox(free_port())
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, tls_context=certificates.context("localhost"),
        authenticator=authenticator(box),
    )  # fmt: skip
    controller.start()
    try:
        monkeypatch.setenv("T_SMTP_USER", "excompliance")
        monkeypatch.setenv("T_SMTP_PASSWORD", PASSWORD + "-wrong")
        smtp = plain_smtp(box.port, host="localhost", security="starttls", ca_file=certificates.ca_file)
        said = send(settings(replace(smtp, user_env="T_SMTP_USER", password_env="T_SMTP_PASSWORD")), judged_run([]))
        (warning,) = said.warnings
        assert warning.startswith(f"notify: email via localhost:{box.port}: not sent: the login was refused: 535")
        assert PASSWORD not in warning and box.mails == []
    finally:
        controller.stop()


def test_an_unreachable_mail_server_or_an_unset_variable_is_one_line(monkeypatch):
    port = free_port()  # nothing listens
    monkeypatch.setenv("T_SMTP_USER", "excompliance")
    monkeypatch.setenv("T_SMTP_PASSWORD", PASSWORD)
    smtp = replace(plain_smtp(port), user_env="T_SMTP_USER", password_env="T_SMTP_PASSWORD")
    assert send(settings(smtp), judged_run(FAILING)).warnings == [
        f"notify: email via 127.0.0.1:{port}: not sent: Connection refused"
    ]
    monkeypatch.delenv("T_SMTP_PASSWORD")
    assert send(settings(smtp), judged_run(FAILING)).warnings == [
        f"notify: email via 127.0.0.1:{port}: not sent: environment variable T_SMTP_PASSWORD is not set"
    ]


def test_a_webhook_that_fails_is_one_line_that_never_shows_its_url(receiver, monkeypatch):
    monkeypatch.setenv("T_HOOK", receiver.url)
    receiver.answer = 400
    assert send(settings(webhook="T_HOOK"), judged_run(FAILING)).warnings == [
        "notify: the webhook ($T_HOOK): not sent: it answered 400 Bad Request"
    ]
    receiver.answer = 302  # a redirect is not followed
    assert send(settings(webhook="T_HOOK"), judged_run(FAILING)).warnings == [
        "notify: the webhook ($T_HOOK): not sent: it answered 302 Found"
    ]
    cases = {
        f"http://127.0.0.1:{free_port()}/hook/{TOKEN}": "Connection refused",
        f"http://hooks.example.test/services/{TOKEN}": "the URL in T_HOOK is not https (plain http only to a "
        "loopback host)",
        f"ftp://127.0.0.1/{TOKEN}": "the value of T_HOOK is not an https URL",
        TOKEN: "the value of T_HOOK is not an https URL",
    }
    for url, why in cases.items():
        monkeypatch.setenv("T_HOOK", url)
        assert send(settings(webhook="T_HOOK"), judged_run(FAILING)).warnings == [
            f"notify: the webhook ($T_HOOK): not sent: {why}"
        ]
    monkeypatch.delenv("T_HOOK")
    assert send(settings(webhook="T_HOOK"), judged_run(FAILING)).warnings == [
        "notify: the webhook ($T_HOOK): not sent: environment variable T_HOOK is not set"
    ]


def test_https_webhook_certificates_are_checked(certificates, monkeypatch):
    # The system store checks the webhook's certificate: the test CA is unknown to it.
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = certificates.context("localhost").wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("T_HOOK", f"https://localhost:{server.server_address[1]}/hook/{TOKEN}")
        (warning,) = send(settings(webhook="T_HOOK"), judged_run(FAILING)).warnings
        assert warning == (
            "notify: the webhook ($T_HOOK): not sent: certificate not trusted: unable to get local issuer certificate"
        )
    finally:
        thread.join(timeout=10)
        server.server_close()


# --- when: on = change, always, never --------------------------------------------------------------------------


def past(status: str = "fail", **outcomes: str) -> PastRun:
    return PastRun(
        "20261121-023000", "2026-11-21T02:30:00+00:00", status, {tuple(k.split("@")): o for k, o in outcomes.items()}
    )  # type: ignore[misc]


def test_change_means_another_verdict_or_other_failed_or_unchecked_rows():
    now = judged_run([row("BE-02", "EX02"), row("AUTH-02", "EX01", "error"), row("EWS-01", "EX03", "passed")])
    same = past(**{"BE-02@ex02": "failed", "AUTH-02@ex01": "error", "EWS-01@ex03": "passed"})
    assert not notify.changed(now, same)
    assert not notify.changed(now, past(**{"BE-02@ex02": "failed", "AUTH-02@ex01": "error"}))  # a pass is no news
    assert notify.changed(now, None)  # the first run of an org
    assert notify.changed(now, past("unreachable"))
    assert notify.changed(now, past(**{"BE-02@ex02": "failed", "AUTH-02@ex01": "failed"}))  # now unchecked
    assert notify.changed(now, past(**{"BE-02@ex02": "failed", "AUTH-02@ex01": "error", "EWS-01@ex03": "failed"}))
    assert notify.changed(now, past(**{"BE-02@ex02": "failed", "AUTH-02@ex01": "error", "x@y": "waived"})) is False
    assert notify.should_send("always", now, same) and not notify.should_send("never", now, None)
    assert not notify.should_send("change", now, same) and notify.should_send("change", now, None)


def test_a_partial_run_sends_nothing_whatever_on_says(receiver, monkeypatch):
    monkeypatch.setenv("T_HOOK", receiver.url)
    rows = [row("BE-02", "EX02"), row("EWS-01", "EX03", "passed")]
    partial = judged_run(rows, expected=43)  # 2 of the org's 43 rows judged: -k, -m, --lf or node IDs
    whole = judged_run(rows, expected=2)
    for on in ("always", "change"):
        assert not notify.should_send(on, partial, None) and notify.should_send(on, whole, None)
        said = send(settings(webhook="T_HOOK", on=on), partial)
        assert said == Said() and receiver.posts == []
    send(settings(webhook="T_HOOK"), whole)
    assert len(receiver.posts) == 1


# --- [notify] in the org config --------------------------------------------------------------------------------


def config_with(tmp_path: Path, notify_table: str) -> Path:
    return live_org(tmp_path, "\n[notify]\n" + notify_table)


def test_notify_config_is_read_strictly(tmp_path):
    path = config_with(
        tmp_path,
        'smtp_host = "smtp.contoso.com"\nsmtp_user_env = "U"\nsmtp_password_env = "P"\nfrom = "a@contoso.com"\n'
        'to = ["b@contoso.com", "c.d+x@mail.contoso.com"]\nwebhook_url_env = "HOOK"\n',
    )
    found = load_org_config(path).notify
    recipients = ("b@contoso.com", "c.d+x@mail.contoso.com")
    smtp = SmtpSettings("smtp.contoso.com", 587, "starttls", "U", "P", None, "a@contoso.com", recipients)
    assert found == NotifySettings("change", smtp, "HOOK", 30.0)
    assert load_org_config(live_org(tmp_path)).notify is None
    tls = load_org_config(
        config_with(tmp_path, 'smtp_host = "s.contoso.com"\nsmtp_security = "tls"\nfrom = "a@b.c"\nto = ["d@e.f"]\n')
    )
    assert tls.notify.smtp.port == 465  # type: ignore[union-attr]
    local = 'smtp_host = "127.0.0.1"\nsmtp_security = "none"\nfrom = "a@b.c"\nto = ["d@e.f"]\n'
    assert load_org_config(config_with(tmp_path, local)).notify.smtp.port == 25  # type: ignore[union-attr]


MAIL = 'smtp_host = "smtp.contoso.com"\nfrom = "a@contoso.com"\nto = ["b@contoso.com"]\n'


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('on = "sometimes"\n' + MAIL, r"\[notify\] on: 'sometimes' is not one of change, always, never"),
        ("smtp_hots = 1\n" + MAIL, r"\[notify\] smtp_hots: unknown key"),
        (
            "",
            r"\[notify\]: name a mail server \(smtp_host, from, to\) or a webhook \(webhook_url_env\), or set on = "
            '"never"',
        ),
        ('to = ["b@contoso.com"]\n', r"\[notify\] to: mail needs smtp_host too"),
        (MAIL.replace('"smtp.contoso.com"', '"smtp.contoso.com\\r\\nX: y"'), r"smtp_host: .* is not a host name"),
        (MAIL + 'smtp_security = "none"\n', r'smtp_security: "none" only to a loopback host'),
        (MAIL + 'smtp_security = "ssl"\n', r"smtp_security: 'ssl' is not one of starttls, tls, none"),
        (MAIL + "smtp_port = 0\n", r"smtp_port: 0 is out of range 1..65535"),
        (MAIL + 'smtp_user_env = "U"\n', r"smtp_password_env: give both, or neither"),
        (MAIL + 'smtp_password_env = "hunter2!"\n', r"smtp_password_env: must name an environment variable"),
        (MAIL + 'smtp_ca_file = "missing.pem"\n', r"smtp_ca_file: cannot read .*missing.pem"),
        (MAIL.replace("a@contoso.com", "Admins <a@contoso.com>"), r"from: 'Admins <a@contoso.com>' is not an email"),
        (
            MAIL.replace('["b@contoso.com"]', '["b@contoso.com", "c@contoso.com\\nBcc: d@evil.test"]'),
            r"to: .* is not an email",
        ),
        (MAIL.replace('["b@contoso.com"]', "[]"), r"to: name at least one recipient"),
        (MAIL.replace('["b@contoso.com"]', '"b@contoso.com"'), r"to: expected a list of strings"),
        ('webhook_url_env = "https://outlook.office.com/webhook/x"\n', r"webhook_url_env: must name an environment"),
        (MAIL + "timeout_seconds = 0\n", r"timeout_seconds: must be positive"),
    ],
)
def test_notify_config_errors_name_the_key(tmp_path, table, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_org_config(config_with(tmp_path, table))
    assert "hunter2" not in str(caught.value) and "outlook.office.com" not in str(caught.value)


def test_never_needs_no_channel(tmp_path):
    assert load_org_config(config_with(tmp_path, 'on = "never"\n')).notify.on == "never"  # type: ignore[union-attr]


# --- nightly runs of the suite, as a scheduler starts them -------------------------------------------------------

# The org is "live" (its config is read, [notify] with it), its facts those of a hand-made org: a plugin of the
# run's own hands them over in place of the collectors.
FAKE_COLLECT = """
import os
from pathlib import Path
from exchange_compliance import snapshot
from exchange_compliance.plugin import evidence
evidence.collect_org = lambda config, say: snapshot.read(Path(os.environ["T_FACTS"]))
"""


@dataclass
class Nightly:
    ret: int
    stdout: str
    stderr: str

    @property
    def notify_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if "notif" in line]


def nightly(workdir: Path, faults: tuple[str, ...], table: str, env: dict[str, str], *args: str) -> Nightly:
    (workdir / "fake_collect.py").write_text(FAKE_COLLECT)
    facts = snapshot.write(build_org(3, faults, org="prod"), workdir / "facts.json")
    config = live_org(workdir, "\n[notify]\n" + table)
    command = [sys.executable, "-m", "pytest", str(TESTS_ENV), "-p", "fake_collect", "--org", str(config)]
    command += ["--reports-dir", str(workdir / "reports"), *args]
    done = subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "T_FACTS": str(facts), **env},
    )
    return Nightly(done.returncode, done.stdout, done.stderr)


def test_on_change_sends_after_the_first_run_not_after_an_identical_one_and_again_on_news(tmp_path, mailbox, receiver):
    table = f'smtp_host = "127.0.0.1"\nsmtp_port = {mailbox.port}\nsmtp_security = "none"\n'
    table += 'from = "excompliance@contoso.test"\nto = ["exchange-admins@contoso.test"]\nwebhook_url_env = "T_HOOK"\n'
    env = {"T_HOOK": receiver.url}
    first = nightly(tmp_path, ("backend-cert:EX02",), table, env)
    assert first.ret == 1, first.stdout + first.stderr
    assert len(mailbox.mails) == 1 and len(receiver.posts) == 1
    assert first.notify_lines == [
        f"exchange-compliance: notified: email to exchange-admins@contoso.test via 127.0.0.1:{mailbox.port}; "
        "the webhook ($T_HOOK)"
    ]
    assert first.stdout.strip().splitlines()[-1].startswith("exchange-compliance: prod: FAIL: ")  # still the last
    mail = mailbox.mails[0]
    assert mail["Subject"].startswith("prod: FAIL: 2 blocking at or above high: BE-02 on EX02 (critical, failed)")
    stamped = sorted((tmp_path / "reports" / "prod").glob("2*.html"))
    assert f"Report: {stamped[-1]}" in body_of(mail)

    second = nightly(tmp_path, ("backend-cert:EX02",), table, env)  # nothing changed
    assert second.ret == 1 and second.notify_lines == []
    assert len(mailbox.mails) == 1 and len(receiver.posts) == 1

    third = nightly(tmp_path, ("backend-cert:EX02", "no-auth-cert:EX01"), table, env)  # a new failure
    assert third.ret == 1 and len(mailbox.mails) == 2 and len(receiver.posts) == 2
    body = body_of(mailbox.mails[1])
    assert "New failures (1):\n  AUTH-02 on EX01 (critical, failed)\n" in body
    assert "Still failing (2):\n  BE-02 on EX02 (critical, failed), failing for 3 runs, since " in body
    assert json.loads(receiver.posts[1][2])["new_failures"]["rows"] == ["AUTH-02 on EX01 (critical, failed)"]
    output = first.stdout + first.stderr + second.stdout + third.stdout + third.stderr
    assert TOKEN not in output and "Traceback" not in output


def test_a_partial_run_tells_nobody_and_the_next_whole_run_compares_with_the_last_whole_one(tmp_path, receiver):
    table = 'webhook_url_env = "T_HOOK"\n'  # on = "change"
    env = {"T_HOOK": receiver.url}
    first = nightly(tmp_path, ("backend-cert:EX02",), table, env)
    assert first.ret == 1 and len(receiver.posts) == 1, first.stdout + first.stderr
    partial = nightly(tmp_path, ("backend-cert:EX02",), table, env, "-k", "EX01")  # EX01's rows: all pass
    assert partial.ret == 0, partial.stdout + partial.stderr
    assert partial.notify_lines == [
        "partial:  a partial run: latest.prom and notifications are left to runs of every requirement; "
        "the history passes it over"
    ]
    assert partial.stdout.strip().splitlines()[-1].startswith("exchange-compliance: prod: PARTIAL: ")
    again = nightly(tmp_path, ("backend-cert:EX02",), table, env)  # as the first: no news, whatever -k judged
    assert again.ret == 1 and again.notify_lines == [] and len(receiver.posts) == 1


def test_always_sends_after_every_run(tmp_path, receiver):
    table = 'on = "always"\nwebhook_url_env = "T_HOOK"\n'
    for _ in range(2):
        run = nightly(tmp_path, (), table, {"T_HOOK": receiver.url})
        assert run.ret == 0, run.stdout + run.stderr
    assert len(receiver.posts) == 2
    assert all(json.loads(body)["verdict"]["status"] == "pass" for _path, _headers, body in receiver.posts)


def test_an_unreachable_mail_server_is_one_warning_and_the_same_exit_status(tmp_path, monkeypatch):
    port = free_port()  # nothing listens there
    table = f'on = "always"\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_security = "none"\n'
    table += 'smtp_user_env = "T_SMTP_USER"\nsmtp_password_env = "T_SMTP_PASSWORD"\n'
    table += 'from = "excompliance@contoso.test"\nto = ["exchange-admins@contoso.test"]\n'
    env = {"T_SMTP_USER": "excompliance", "T_SMTP_PASSWORD": PASSWORD}
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    failing = nightly(tmp_path / "with", ("backend-cert:EX02",), table, env)
    quiet = nightly(tmp_path / "without", ("backend-cert:EX02",), 'on = "never"\n', {})
    assert failing.ret == quiet.ret == 1, failing.stdout + failing.stderr
    assert failing.notify_lines == [
        f"exchange-compliance: notify: email via 127.0.0.1:{port}: not sent: Connection refused"
    ]
    assert failing.stdout.strip().splitlines()[-1] == quiet.stdout.strip().splitlines()[-1]
    assert PASSWORD not in failing.stdout + failing.stderr and "Traceback" not in failing.stdout + failing.stderr


def test_a_run_that_could_not_check_the_org_tells_so(tmp_path, receiver, monkeypatch):
    from conftest import CREDENTIALS

    config = live_org(tmp_path, '\n[notify]\nwebhook_url_env = "T_HOOK"\n')  # its DC refuses: exit 6
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(TESTS_ENV),
        "--org",
        str(config),
        "--reports-dir",
        str(tmp_path / "r"),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, **CREDENTIALS, "T_HOOK": receiver.url},
    )  # fmt: skip
    assert done.returncode == 6, done.stdout + done.stderr
    ((_path, _headers, body),) = receiver.posts
    posted = json.loads(body)
    assert posted["verdict"]["status"] == "unreachable"
    assert posted["text"].startswith("prod: NOT CHECKED: the org could not be checked: ")


def test_the_readme_and_the_example_config_give_a_notify_table_that_reads(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    table = readme.split("```toml\n[notify]\n", 1)[1].split("```", 1)[0]
    found = load_org_config(config_with(tmp_path, table)).notify
    assert found is not None and found.on == "change" and found.webhook_url_env == "EXCOMP_WEBHOOK_URL"
    assert found.smtp is not None and found.smtp.recipients == ("exchange-admins@contoso.com",)
    example = (repo / "orgs" / "example-prod.toml").read_text().split("# [notify]\n", 1)[1]
    # Every key but the CA file, which names a file of the admin's.
    keys = [line.removeprefix("# ") for line in example.splitlines() if re.match(r"# (?!smtp_ca_file)\w+ = ", line)]
    found = load_org_config(config_with(tmp_path, "\n".join(keys) + "\n")).notify
    assert found is not None and found.smtp is not None and found.smtp.user_env == "EXCOMP_SMTP_USER"
