"""Secrets never reach a report or a log: runs with known secret values in the environment, every output grepped."""

from __future__ import annotations

from pathlib import Path

from conftest import build_org, live_org

SECRETS = {
    "T_LDAP_USER": "svc-audit@contoso.test",
    "T_LDAP_PASSWORD": "Zq9-ldap-Secret-7f3c",
    "T_WINRM_USER": "CONTOSO\\svc-audit",
    "T_WINRM_PASSWORD": "Wr8-winrm-Secret-1d2e",
}
PASSWORDS = ("Zq9-ldap-Secret-7f3c", "Wr8-winrm-Secret-1d2e")


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_nowhere(texts: dict[str, bytes]) -> None:
    for name, content in texts.items():
        for secret in PASSWORDS:
            for form in (secret, secret.encode("utf-16-le").decode("latin-1")):
                assert form.encode("latin-1") not in content, f"{secret} in {name}"


def test_a_live_run_writes_no_secret(suite, pytester):
    # Verbose, every report section, debug logging: everything the suite can say about a run that used them.
    args = ("--org", str(live_org(pytester.path)), "-v", "-rA", "--log-level=DEBUG", "--log-cli-level=DEBUG")
    run = suite(None, *args, env=SECRETS)
    assert run.ret == 6, run.stdout + run.stderr  # it got past the credentials, to the (closed) directory
    written = outputs(run.reports.parent)
    assert any(name.endswith("latest.html") for name in written) and any(name.endswith(".xml") for name in written)
    assert_nowhere({**written, "stdout": run.stdout.encode(), "stderr": run.stderr.encode()})


def test_a_judged_run_writes_no_secret(suite):
    run = suite(build_org(2, ("backend-cert:EX02",)), "-v", "-rA", env=SECRETS)
    assert run.ret == 1
    written = outputs(run.reports)
    assert len(written) >= 10  # latest and stamped: json, html, xml, facts, fixes
    assert_nowhere({**written, "stdout": run.stdout.encode(), "stderr": run.stderr.encode()})
