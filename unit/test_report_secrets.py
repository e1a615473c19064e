"""Secrets never reach a report or a log: runs with known secret values in the environment, every output grepped.

The runs that matter use the credentials: a simple bind the lab's domain controller refuses (a wrong password
for the lab's audit account), and WinRM logons every lab server answers with 401. Each writes every report it
can, verbose and with debug logging, and neither the wrong passwords nor the lab's real one may appear.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from lab_org import REPO, lab_up, needs_lab

from conftest import build_org, live_org, report_data

SECRETS = {
    "T_LDAP_USER": "svc-audit@contoso.test",
    "T_LDAP_PASSWORD": "Zq9-ldap-Secret-7f3c",
    "T_WINRM_USER": "CONTOSO\\svc-audit",
    "T_WINRM_PASSWORD": "Wr8-winrm-Secret-1d2e",
}
PASSWORDS = ("Zq9-ldap-Secret-7f3c", "Wr8-winrm-Secret-1d2e")
# Everything the suite can say about a run: verbose, every report section, debug logging (urllib3, ldap3, ...).
LOUD = ("-v", "-rA", "--log-level=DEBUG", "--log-cli-level=DEBUG")


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def forms(secret: str, user: str | None = None) -> list[bytes]:
    """How a secret could be written: as text, UTF-16 (PowerShell, NTLM), base64 (Basic: `user:password`)."""
    found = [secret.encode(), secret.encode("utf-16-le"), base64.b64encode(secret.encode())]
    if user:
        found.append(base64.b64encode(f"{user}:{secret}".encode()))
    return found


def assert_nowhere(texts: dict[str, bytes], secrets: tuple[str, ...] = PASSWORDS, user: str | None = None) -> None:
    for name, content in texts.items():
        for secret in secrets:
            for form in forms(secret, user):
                assert form not in content, f"{secret} in {name}"


def test_a_live_run_writes_no_secret(suite, pytester):
    run = suite(None, "--org", str(live_org(pytester.path)), *LOUD, env=SECRETS)
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


def test_the_report_environment_is_versions_alone(suite):
    """pytest-html's environment table (pytest-metadata's, which copies a CI system's variables and --metadata into
    the page as markup) holds versions alone: a token in a CI variable is not written, nor is markup run."""
    token = "Ci7-build-Secret-44aa"
    env = {**SECRETS, "BUILD_URL": f"https://audit:{token}@ci.example/job/1", "JENKINS_URL": "<img src=x onerror=1>"}
    run = suite(build_org(1), "-v", "--metadata", "Password", token, env=env)
    assert run.ret == 0, run.stdout + run.stderr
    assert token not in run.stdout and "metadata: {'Python'" in run.stdout  # -v's header: versions alone too
    environment = report_data(run.reports / "latest.html")["environment"]
    assert sorted(environment) == ["Platform", "Python", "exchange-compliance", "pytest", "pytest-html"]
    assert_nowhere(outputs(run.reports), (*PASSWORDS, token))
    assert "onerror" not in (run.reports / "latest.html").read_text()


# --- against the lab org: the credentials are used, and refused -----------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> dict[str, str]:
    """The lab running, and its real credentials (a secret too: they must not leak either)."""
    lab_up("healthy")
    return {name: os.environ[name] for name in ("EXCOMP_LAB_USER", "EXCOMP_LAB_WINRM_USER", "EXCOMP_LAB_PASSWORD")}


def on_the_lab(test):
    for mark in needs_lab:
        test = mark(test)
    return test


def lab_org(folder: Path, directory_password: str, winrm_password: str) -> Path:
    """orgs/lab.toml with its own variable names, so that each run chooses which password is wrong."""
    text = (REPO / "orgs" / "lab.toml").read_text().replace('"../.lab/', f'"{REPO}/.lab/')
    text = text.replace('user_env = "EXCOMP_LAB_USER"', 'user_env = "T_LDAP_USER"')
    text = text.replace('user_env = "EXCOMP_LAB_WINRM_USER"', 'user_env = "T_WINRM_USER"')
    text = text.replace('password_env = "EXCOMP_LAB_PASSWORD"', f'password_env = "{directory_password}"', 1)
    text = text.replace('password_env = "EXCOMP_LAB_PASSWORD"', f'password_env = "{winrm_password}"', 1)
    path = folder / "prod.toml"
    path.write_text(text)
    return path


def lab_run(suite, folder: Path, org: Path, env: dict[str, str]):
    run = suite(None, "--org", str(org), "--reports-dir", str(folder / "reports"), *LOUD, env=env)
    written = outputs(folder / "reports")
    assert any(name.endswith("latest.html") for name in written) and any(name.endswith(".xml") for name in written)
    return run, {**written, "stdout": run.stdout.encode(), "stderr": run.stderr.encode()}


@on_the_lab
def test_a_refused_ldap_bind_writes_no_secret(suite, pytester, lab):
    org = lab_org(pytester.path, "T_LDAP_PASSWORD", "T_WINRM_PASSWORD")
    env = {**SECRETS, "T_LDAP_USER": lab["EXCOMP_LAB_USER"], "T_WINRM_USER": lab["EXCOMP_LAB_WINRM_USER"]}
    run, texts = lab_run(suite, pytester.path, org, env)
    assert run.ret == 6, run.stdout + run.stderr
    assert f"bind as {lab['EXCOMP_LAB_USER']} refused: invalidCredentials" in run.stdout
    assert_nowhere(texts, (*PASSWORDS, lab["EXCOMP_LAB_PASSWORD"]), lab["EXCOMP_LAB_USER"])


@on_the_lab
def test_a_winrm_logon_refused_with_401_writes_no_secret(suite, pytester, lab):
    org = lab_org(pytester.path, "T_LAB_PASSWORD", "T_WINRM_PASSWORD")
    env = {
        **SECRETS,
        "T_LDAP_USER": lab["EXCOMP_LAB_USER"],
        "T_LAB_PASSWORD": lab["EXCOMP_LAB_PASSWORD"],  # the directory is read: the servers are reached
        "T_WINRM_USER": lab["EXCOMP_LAB_WINRM_USER"],
    }
    run, texts = lab_run(suite, pytester.path, org, env)
    assert run.ret == 6, run.stdout + run.stderr  # no checked server answered
    assert "the credentials were rejected (HTTP 401, ntlm)" in run.stdout
    assert_nowhere(texts, (*PASSWORDS, lab["EXCOMP_LAB_PASSWORD"]), lab["EXCOMP_LAB_WINRM_USER"])
