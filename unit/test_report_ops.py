"""The shipped nightly operation (ops/): the systemd timer and unit, the cron line, the CI job and ops/nightly,
which loads the secrets and a Kerberos ticket and runs the suite with its exit status."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CREDENTIALS, REPO, live_org

OPS = REPO / "ops"
NIGHTLY = OPS / "nightly"
INSTALLED = "/opt/exchange-compliance"  # where the units and the cron line expect the checkout


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((OPS / "systemd" / name).read_text())
    return parser


def test_service_runs_nightly_for_the_instance_org():
    service = unit("exchange-compliance@.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == f"{INSTALLED}/ops/nightly %i"
    assert service["WorkingDirectory"] == INSTALLED
    assert service["SuccessExitStatus"] == "1"  # failing requirements are the report's news; 4 and 6 fail the unit
    assert f"{INSTALLED}/reports" in service["ReadWritePaths"]


def test_timer_starts_the_service_nightly():
    timer = unit("exchange-compliance@.timer")
    assert timer["Timer"]["Unit"] == "exchange-compliance@%i.service"
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)")
def test_systemd_accepts_the_units(tmp_path):
    # As installed, with the checkout's real path: verify refuses a missing or relative ExecStart.
    for name in ("exchange-compliance@.service", "exchange-compliance@.timer"):
        text = (OPS / "systemd" / name).read_text().replace(INSTALLED, str(REPO))
        (tmp_path / name.replace("@.", "@prod.")).write_text(text)
    units = [str(tmp_path / "exchange-compliance@prod.service"), str(tmp_path / "exchange-compliance@prod.timer")]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    assert done.returncode == 0 and "ignoring" not in done.stderr, done.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", "*-*-* 02:30:00"], capture_output=True, text=True)
    assert calendar.returncode == 0 and "Normalized form: *-*-* 02:30:00" in calendar.stdout


def test_cron_line_runs_nightly_at_half_past_two():
    lines = [line for line in (OPS / "cron" / "exchange-compliance").read_text().splitlines() if line.strip()]
    jobs = [line for line in lines if not line.startswith("#") and "=" not in line.split()[0]]
    (job,) = jobs
    minute, hour, day, month, weekday, user, command, *rest = job.split()
    assert (minute, hour, day, month, weekday, user) == ("30", "2", "*", "*", "*", "excompliance")
    assert command == f"{INSTALLED}/ops/nightly" and rest[:2] == ["prod", ">>"]


def test_ci_job_gates_on_the_target_and_publishes_the_report():
    yaml = pytest.importorskip("yaml", reason="needs PyYAML to parse the CI file")
    job = yaml.safe_load((OPS / "ci" / "gitlab-ci.yml").read_text())["exchange-cu-gate"]
    assert 'ops/nightly prod --gate --target-version "$TARGET_VERSION"' in job["script"]
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"  # published on NO-GO too: that is when it is read
    assert "reports/prod/latest.html" in artifacts["paths"]
    assert artifacts["reports"]["junit"] == "reports/prod/latest.xml"  # where the plugin writes JUnit by default


def test_nightly_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(NIGHTLY)]).returncode == 0
    assert NIGHTLY.stat().st_mode & 0o111


def nightly(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    python = Path(shutil.which("python3") or "python3").parent  # the interpreter this suite is installed in
    environment["PATH"] = f"{python}:{environment['PATH']}"
    return subprocess.run([str(NIGHTLY), *args], capture_output=True, text=True, env=environment, timeout=120)


def test_nightly_needs_an_org(tmp_path):
    done = nightly(tmp_path, env={})
    assert done.returncode == 4 and "usage: ops/nightly ORG" in done.stderr


@pytest.mark.parametrize(("org", "shown"), [("..", ".."), ("prod\nx", "$'prod\\nx'"), ("../../tmp/.x.toml", ".x")])
def test_nightly_refuses_a_name_that_is_not_an_org_name_before_reading_any_env_file(tmp_path, org, shown):
    done = nightly(tmp_path, org, env={})
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        f"nightly: {shown} is not an org name (letters, digits, '.', '_' and '-', a letter or digit first)"
    ]


def test_nightly_loads_the_secrets_from_the_env_file(tmp_path):
    env_file = tmp_path / "prod.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in CREDENTIALS.items()))
    org = str(live_org(tmp_path))
    reports = ("--reports-dir", str(tmp_path / "reports"))
    done = nightly(tmp_path, org, *reports, env={"EXCOMP_ENV_FILE": str(env_file)})
    assert done.returncode == 6, done.stdout + done.stderr  # the secrets were found; the (closed) DC was not
    assert (tmp_path / "reports" / "prod" / "latest.json").is_file()
    done = nightly(tmp_path, org, *reports, env={"EXCOMP_ENV_FILE": str(tmp_path / "missing.env")})
    assert done.returncode == 4 and "environment variable T_LDAP_USER is not set" in done.stdout + done.stderr


def test_nightly_refuses_an_unusable_keytab(tmp_path):
    base = {"EXCOMP_ENV_FILE": "/dev/null"}
    done = nightly(tmp_path, "prod", env={**base, "EXCOMP_KEYTAB": str(tmp_path / "none.keytab")})
    assert done.returncode == 4 and "is not a readable keytab" in done.stderr
    keytab = tmp_path / "svc.keytab"
    keytab.write_bytes(b"not a keytab")
    done = nightly(tmp_path, "prod", env={**base, "EXCOMP_KEYTAB": str(keytab)})
    assert done.returncode == 4 and "needs EXCOMP_PRINCIPAL" in done.stderr
    if shutil.which("kinit"):
        done = nightly(tmp_path, "prod", env={**base, "EXCOMP_KEYTAB": str(keytab), "EXCOMP_PRINCIPAL": "svc@X.TEST"})
        assert done.returncode == 4 and "kinit -k -t" in done.stderr


def test_nightly_leaves_the_ticket_to_the_suite_when_the_org_config_names_the_keytab(tmp_path):
    # [kerberos] in the org config: no kinit (none would find EXCOMP_PRINCIPAL here); the suite reads the keytab
    # itself, and says what is wrong with it in its own words.
    org = live_org(tmp_path, '\n[kerberos]\nkeytab_env = "EXCOMP_KEYTAB"\nprincipal = "svc@CONTOSO.TEST"\n')
    org.write_text(org.read_text().replace("[winrm]\n", '[winrm]\ntransport = "kerberos"\n'))
    keytab = tmp_path / "svc.keytab"
    keytab.write_bytes(b"not a keytab")
    env = {"EXCOMP_ENV_FILE": "/dev/null", "EXCOMP_KEYTAB": str(keytab), **CREDENTIALS}
    done = nightly(tmp_path, str(org), "--reports-dir", str(tmp_path / "reports"), env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "nightly:" not in done.stderr
    assert f"[kerberos] keytab_env: {keytab}: not a keytab" in done.stdout + done.stderr
