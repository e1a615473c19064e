"""Loads the exchange-compliance plugin, and brings the lab org up when it is the org asked for.

The lab is this project's stand-in for a real org; only this file knows about it. The plugin and the checks
talk to it exactly as to production, through orgs/lab.toml.
"""

from pathlib import Path

import pytest

pytest_plugins = ["exchange_compliance.plugin"]

LAB_ROOT = Path(__file__).parent / ".lab"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Before the plugin collects the org: the lab must be up and its credentials in the environment.
    config = session.config
    org = config.getoption("org", None)
    if org in ("lab", "lab-kerberos") and not hasattr(config, "workerinput"):
        from exchange_compliance.lab.control import LabError, ensure_lab

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        try:
            # lab-kerberos: only the keytab's path and the principal are exported, never a password.
            ensure_lab(
                LAB_ROOT, say=lambda message: reporter.write_line(f"lab: {message}"), kerberos=org == "lab-kerberos"
            )
        except LabError as exc:
            raise pytest.UsageError(f"the lab org could not be brought up: {exc}") from None
