"""The suite never writes to AD or to a server: shown on the lab org during a whole run."""

from __future__ import annotations

import re

import ldap3
import pytest
from lab_org import LAB_ROOT, REPO, lab_up, needs_lab, run_suite
from ldap3.core.exceptions import LDAPConnectionIsReadOnlyError

from exchange_compliance.collect import collect_org
from exchange_compliance.collect.ldap import open_connection
from exchange_compliance.config import load_org_config

pytestmark = needs_lab


def config():
    return load_org_config(REPO / "orgs" / "lab.toml")


def highest_committed_usn() -> int:
    """Every write to the directory, by anyone, raises the DC's highestCommittedUSN."""
    lab_config = config()
    connection = open_connection(lab_config, lab_config.directory_credentials()).connection
    try:
        connection.search("", "(objectClass=*)", ldap3.BASE, attributes=["highestCommittedUSN"])
        return int(connection.response[0]["raw_attributes"]["highestCommittedUSN"][0])
    finally:
        connection.unbind()


def commands_logged() -> list[str]:
    return re.findall(r"servers INFO (\S+) command: (.*)", (LAB_ROOT / "state" / "servers.log").read_text())


def test_a_whole_run_changes_nothing_in_the_directory_and_runs_only_the_probe(tmp_path):
    state = lab_up("seeds")
    usn_before, commands_before = highest_committed_usn(), len(commands_logged())
    _status, results, output = run_suite(tmp_path)
    assert results["rows"], output
    assert highest_committed_usn() == usn_before
    commands = commands_logged()[commands_before:]
    # One command per server per run, and it is the read-only probe.
    assert sorted(server for server, _ in commands) == sorted(s["name"] for s in state["servers"])
    assert {command for _, command in commands} == {"probe"}


def test_the_directory_connection_refuses_writes():
    lab_up("seeds")
    lab_config = config()
    connection = open_connection(lab_config, lab_config.directory_credentials()).connection
    try:
        with pytest.raises(LDAPConnectionIsReadOnlyError):
            connection.modify(
                "CN=EX01,CN=Computers,DC=lab,DC=contoso,DC=test", {"description": [("MODIFY_REPLACE", ["x"])]}
            )
    finally:
        connection.unbind()


def test_the_collection_uses_only_searches(monkeypatch):
    lab_up("seeds")
    opened = []
    original = ldap3.Connection.unbind

    def keep_usage(self):
        opened.append(self.usage)
        return original(self)

    monkeypatch.setattr(ldap3.Connection, "unbind", keep_usage)
    collect_org(config())
    usage = opened[-1]
    assert usage.search_operations > 0
    writes = usage.add_operations + usage.modify_operations + usage.delete_operations + usage.modify_dn_operations
    assert writes == 0 and usage.extended_operations == 0
