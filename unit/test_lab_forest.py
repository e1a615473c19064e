"""The global catalog reads, on the lab's own domain: memberships through the Samba DC's global catalog (3269) and
its domain port, every computer's expansion checked against the tokenGroups Samba computes, in a number of round
trips that does not grow with the servers. (A second domain cannot be added to the lab: Samba 4.17 hosts no child
domain; test_forest.py proves the rules across domains on evidence files.)"""

from __future__ import annotations

import json
import os
import time

from lab_org import REPO, lab_up, needs_lab, outcomes, run_suite

from exchange_compliance.collect import collect_org
from exchange_compliance.collect.directory import DirectoryReader
from exchange_compliance.collect.ldap import Sources, close, open_connection
from exchange_compliance.config import load_org_config
from exchange_compliance.judge.access import computer_account, token_mismatch, unresolved_groups

pytestmark = needs_lab


def test_memberships_come_through_the_global_catalog_and_match_token_groups():
    lab_up("seeds")
    directory = collect_org(load_org_config(REPO / "orgs" / "lab.toml")).directory
    assert directory.global_catalog == "dc01.lab.contoso.test:3269" and directory.global_catalog_unavailable is None
    [domain] = directory.domains
    assert (domain.netbios_name, domain.dns_name, domain.controller) == (
        "LAB",
        "lab.contoso.test",
        "dc01.lab.contoso.test:636",
    )
    assert domain.sid and directory.domain_sid == domain.sid
    for name, account in directory.computers.items():
        assert unresolved_groups(directory, account) == (), name
        assert account.token_groups is not None and account.token_groups.controller == "dc01.lab.contoso.test:636"
        # Samba computes tokenGroups by the rules the expansion follows: no difference on any server.
        assert token_mismatch(directory, computer_account(directory, name)) is None, name
    # Seed 000's EX02: Domain Admins (global) reached through the team, and BUILTIN\Administrators (domain-local).
    ex02 = directory.computers["EX02"].token_groups
    assert (
        ex02 is not None
        and f"{domain.sid}-512" in (ex02.token_groups or ())
        and "S-1-5-32-544" in (ex02.token_groups or ())
    )
    types = {g.name: g.scope for g in directory.groups.values()}
    assert types["Exchange Servers"] == "universal" and types["Domain Admins"] == "global"
    assert types["Administrators"] == "domain_local"


def test_the_evidence_has_no_unresolved_group_when_the_global_catalog_answers(tmp_path):
    lab_up("rights-cases")
    _status, results, output = run_suite(tmp_path)
    assert results, output
    assert not any("not collected" in row["message"] for row in results["rows"]), output
    facts = json.loads((tmp_path / "lab" / "latest-facts.json").read_text())["facts"]["directory"]
    assert facts["global_catalog"] == "dc01.lab.contoso.test:3269"
    assert "dc01.lab.contoso.test:3269" in output  # the progress line names the global catalog read


def test_a_global_catalog_that_does_not_answer_is_said_and_one_domain_is_still_judged(tmp_path):
    lab_up("rights-cases")
    org = tmp_path / "nogc.toml"
    text = (REPO / "orgs" / "lab.toml").read_text().replace('"../.lab/', f'"{REPO}/.lab/')
    org.write_text(text.replace('tls = "ldaps"', 'tls = "ldaps"\nglobal_catalog_port = 1'))
    _status, results, output = run_suite(tmp_path, org=str(org))
    assert "global catalog none (no global catalog answered: dc01.lab.contoso.test:1:" in output
    # One domain: its DC holds every group, so the rows are judged as with the global catalog.
    assert outcomes(results, "error") == set()
    assert ("ACL-01", "EX09") in outcomes(results, "failed") and ("ACL-01", "EX03") in outcomes(results, "failed")


def test_round_trips_do_not_grow_with_the_number_of_servers():
    """The whole read in round trips (a search waited for; the pipelined tokenGroups reads count once per window's
    worth, 64), and the search operations sent, for 3 and for 40 servers."""
    figures = {}
    for count in (3, 40):
        lab_up("healthy", servers=count)
        config = load_org_config(REPO / "orgs" / "lab.toml")
        credentials = config.directory_credentials()
        bound = open_connection(config, credentials)
        sources = Sources(config, credentials, bound)  # type: ignore[arg-type]
        try:
            started = time.monotonic()
            reader = DirectoryReader(bound.connection, None, sources)
            directory = reader.read()
            elapsed = time.monotonic() - started
            assert len(directory.servers) == count and directory.global_catalog
            figures[count] = (reader.round_trips, sources.searches, reader.pipelined_reads, elapsed)
        finally:
            sources.close()
            close(bound.connection)
    for count, (trips, searches, pipelined, elapsed) in figures.items():
        print(f"\n{count} servers: {trips} round trips, {searches} search operations ({pipelined} pipelined "
              f"tokenGroups reads), {elapsed * 1000:.0f} ms")  # fmt: skip
    assert figures[3][0] == figures[40][0]
    # The only operations that grow are the tokenGroups reads, one per computer, pipelined.
    assert figures[40][1] - figures[3][1] == 40 - 3 == figures[40][2] - figures[3][2]


def test_kerberos_reads_the_global_catalog_too(tmp_path):
    # The run gets only what the root conftest exports for lab-kerberos: the keytab's path and the principal.
    lab_up("rights-cases")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCOMP_LAB_") and not k.startswith("KRB5")}
    _status, results, output = run_suite(tmp_path, org="lab-kerberos", env=env)
    facts = json.loads((tmp_path / "lab-kerberos" / "latest-facts.json").read_text())["facts"]["directory"]
    assert facts["global_catalog"] == "dc01.lab.contoso.test:3269", output
    assert outcomes(results, "error") == set()
