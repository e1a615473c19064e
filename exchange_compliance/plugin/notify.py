"""Telling someone: after a run, a message by email, to a webhook, or both ([notify] in the org config).

`on = "change"` (the default) sends when the verdict, or the set of failed or the set of unchecked rows, differs
from the org's previous run (the first run of an org is a change); "always" after every run; "never" not at all.
A partial run (-k, -m, --lf, node IDs: part of the org's rows) sends nothing whatever `on` says, and the previous
run is the newest whole one (history.History.last): an admin's `-k EX01` tells nobody the other rows were fixed.
The message: the verdict line; new failures, resolved and still failing, counted and named up to NAMES_LIMIT
each; the report's path. The subject starts with the org and the verdict. The webhook gets a JSON POST with
`text` (what Teams' and Slack's incoming webhooks show) and the same in structured fields.

Names from AD are data: control characters are spelled out, so no name can add a header to the mail or a line
to the message; the mail is built by the email package (EmailMessage, SMTP policy), the JSON by json.dumps, and
the webhook's text has Slack's and Teams' markup characters (& < >) escaped, so a server named <!channel>
notifies nobody.

A message that cannot be sent is one warning line naming the mail server (host:port) or "the webhook" (and the
variable that holds its URL, never the URL: Teams and Slack URLs carry their token), never a password; it never
changes the run's exit status. TLS certificates are checked (the system store, or [notify] smtp_ca_file).
"""

from __future__ import annotations

import email.policy
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from ..config import NotifySettings, SmtpSettings, is_loopback
from ..text import one_line
from .history import PastRun, streak_text
from .results import OUTCOMES, Row
from .run_verdict import JudgedRun
from .summary import when

NAMES_LIMIT = 20  # rows named in each list; the rest are counted
SUBJECT_LIMIT = 200
WORDS = {"error": "could not be checked", "not_applicable": "not applicable"}


class NotSent(Exception):
    """Why a message was not sent, in words safe to print: no URL, no password."""


def changed(judged: JudgedRun, last: PastRun | None) -> bool:
    """Whether the verdict, the failed rows or the unchecked rows differ from the org's previous run."""
    if last is None:
        return True
    if judged.verdict.status != last.status:
        return True
    now = {outcome: frozenset(r.key for r in judged.rows if r.outcome == outcome) for outcome in ("failed", "error")}
    return now["failed"] != last.keys("failed") or now["error"] != last.keys("error")


def should_send(on: str, judged: JudgedRun, last: PastRun | None) -> bool:
    if judged.verdict.partial:  # the run says so on the terminal (terminal.detail_lines)
        return False
    return on == "always" or (on == "change" and changed(judged, last))


def clean(text: str, limit: int = 500) -> str:
    """One line of data (a name, a verdict line): control characters spelled out, at most `limit` characters."""
    return one_line(str(text), limit=limit)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str  # plain text, one line per item, every piece of data cleaned
    fields: dict[str, object]  # the webhook's structured fields


def _named(rows: list[Row]) -> list[str]:
    names = []
    for row in rows[:NAMES_LIMIT]:
        streak = f", {streak_text(row)}" if row.failing_runs > 1 else ""
        names.append(clean(f"{row.where} ({row.severity}, {WORDS.get(row.outcome, row.outcome)}){streak}"))
    return names


def _section(title: str, rows: list[Row]) -> list[str]:
    lines = [f"{title} ({len(rows)}):" if rows else f"{title}: none"]
    lines += [f"  {name}" for name in _named(rows)]
    if len(rows) > NAMES_LIMIT:
        lines.append(f"  and {len(rows) - NAMES_LIMIT} more")
    return lines


def message(judged: JudgedRun, report: Path | None) -> Message:
    """What is sent: the same words by mail and to the webhook."""
    line = clean(judged.line, limit=2000)
    lines = [line, ""]
    lists: dict[str, list[Row]]
    if judged.verdict.unreachable:  # the verdict line says why
        lists = {}
    elif judged.changes is not None:
        changes = judged.changes
        lists = {
            "new_failures": changes.new_failures,
            "resolved": changes.resolved,
            "still_failing": changes.still_failing,
        }
        lines.append(f"Since the last run ({clean(when(changes.previous_started))}): {changes.counts()}")
        for title, rows in zip(("New failures", "Resolved", "Still failing"), lists.values(), strict=True):
            lines += _section(title, rows)
    else:
        lists = {"failing": [row for row in judged.rows if row.failing]}
        lines.append("No earlier run of this org to compare with.")
        lines += _section("Failing", lists["failing"])
    counts = Counter(row.outcome for row in judged.rows)
    if judged.rows:
        lines.append("Rows: " + ", ".join(f"{counts[o]} {WORDS.get(o, o)}" for o in OUTCOMES if counts[o]))
    if report is not None:
        lines.append(f"Report: {clean(str(report), limit=1000)}")
    fields: dict[str, object] = {
        "org": clean(judged.org_name),
        "started": judged.started.isoformat(),
        "verdict": {"status": judged.verdict.status, "line": line},
        **{name: {"count": len(rows), "rows": _named(rows)} for name, rows in lists.items()},
        "rows": {outcome: counts[outcome] for outcome in OUTCOMES},
        "report": str(report) if report is not None else None,
    }
    subject = clean(judged.line, limit=SUBJECT_LIMIT)
    return Message(subject, "\n".join(lines) + "\n", fields)


def email_message(smtp: SmtpSettings, built: Message) -> EmailMessage:
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["Subject"] = built.subject
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(smtp.recipients)
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid("exchange-compliance", domain=smtp.sender.rpartition("@")[2])
    mail.set_content(built.text)
    return mail


def webhook_body(built: Message) -> bytes:
    text = f"{built.subject}\n\n{built.text}"
    # Slack reads <...> as links and mentions, &...; as entities; Teams renders them as HTML: escaped for both.
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return json.dumps({"text": escaped, **built.fields}).encode("utf-8")


def _context(ca_file: Path | None) -> ssl.SSLContext:
    # Certificate and host name checked, as for every other TLS connection the suite makes.
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _environment(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise NotSent(f"environment variable {variable} is not set")
    return value


def send_email(smtp: SmtpSettings, built: Message, timeout: float) -> None:
    """Send the mail; NotSent with the reason when it cannot be."""
    login = None
    if smtp.user_env and smtp.password_env:
        login = (_environment(smtp.user_env), _environment(smtp.password_env))
    mail = email_message(smtp, built)
    context = _context(smtp.ca_file)
    try:
        if smtp.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if login is not None:
                client.login(*login)
            client.send_message(mail)
    except smtplib.SMTPNotSupportedError:
        raise NotSent(
            "the server does not offer STARTTLS" if smtp.security == "starttls" else "not supported"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotSent(f"every recipient was refused ({', '.join(exc.recipients)})") from None
    except smtplib.SMTPResponseException as exc:
        answer = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        what = "the login was refused" if isinstance(exc, smtplib.SMTPAuthenticationError) else "the server answered"
        raise NotSent(f"{what}: {exc.smtp_code} {clean(answer, limit=200)}") from None
    except smtplib.SMTPServerDisconnected:
        raise NotSent("the server closed the connection") from None
    except smtplib.SMTPException as exc:
        raise NotSent(clean(str(exc), limit=200)) from None
    except OSError as exc:
        raise NotSent(_network_reason(exc)) from None


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return clean(str(exc) or type(exc).__name__, limit=200)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook does not redirect; a POST that did would be re-sent, as a GET, wherever the answer said.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def send_webhook(variable: str, built: Message, timeout: float) -> None:
    """POST the message to the URL in the environment variable `variable`; NotSent (never naming the URL) else."""
    url = _environment(variable)
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("https", "http"):
        raise NotSent(f"the value of {variable} is not an https URL")
    if parts.scheme == "http" and not is_loopback(host):
        raise NotSent(f"the URL in {variable} is not https (plain http only to a loopback host)")
    request = urllib.request.Request(
        url, data=webhook_body(built), headers={"Content-Type": "application/json; charset=utf-8"}, method="POST"
    )
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=_context(None)))
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(4096)
    except urllib.error.HTTPError as exc:
        raise NotSent(f"it answered {exc.code} {clean(exc.reason, limit=100)}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason))
        raise NotSent(_scrub(_network_reason(reason), url)) from None
    except OSError as exc:
        raise NotSent(_scrub(_network_reason(exc), url)) from None


def _scrub(reason: str, url: str) -> str:
    """A reason never carries the URL or its path (the token), whatever the library put in it."""
    path = urllib.parse.urlsplit(url).path
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            reason = reason.replace(secret, "[the webhook URL]")
    return clean(reason, limit=200)


def after_run(
    settings: NotifySettings | None,
    judged: JudgedRun,
    last: PastRun | None,
    report: Path | None,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Send what [notify] asks for, once the run's reports are written. Whatever happens, one line per channel."""
    if settings is None or not should_send(settings.on, judged, last):
        return
    built = message(judged, report)
    sent = []
    smtp = settings.smtp
    if smtp is not None:
        where = f"email via {smtp.host}:{smtp.port}"
        if _attempt(lambda: send_email(smtp, built, settings.timeout_seconds), where, warn):
            sent.append(f"email to {', '.join(smtp.recipients)} via {smtp.host}:{smtp.port}")
    variable = settings.webhook_url_env
    if variable is not None:
        where = f"the webhook (${variable})"
        if _attempt(lambda: send_webhook(variable, built, settings.timeout_seconds), where, warn):
            sent.append(where)
    if sent:
        say("notified: " + "; ".join(sent))


def _attempt(send: Callable[[], None], where: str, warn: Callable[[str], None]) -> bool:
    try:
        send()
    except NotSent as exc:
        warn(f"notify: {where}: not sent: {exc}")
        return False
    except Exception as exc:  # a bug here must not cost the run its exit status; its words might hold a secret
        warn(f"notify: {where}: not sent: {type(exc).__name__}")
        return False
    return True
