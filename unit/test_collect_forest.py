"""The collector across a forest of two domains (fake_forest.py: a DC of each domain and a global catalog, holding
what AD's hold): universal groups from the global catalog, global and domain-local groups from each domain's DC,
foreign security principals, tokenGroups from the computer's own domain; a domain or a global catalog that does not
answer; round trips that do not grow with the servers. And the pipelined tokenGroups reads over a real socket."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import ldap3
import pytest
from fake_dc import SEARCH_DONE, FakeDC, Request, entry, message, org_answer
from fake_forest import CHILD, CHILD_SID, ROOT, ROOT_SID, FakeSource, forest

from exchange_compliance.collect import directory as reader_module
from exchange_compliance.collect import ldap
from exchange_compliance.collect.directory import DirectoryReader
from exchange_compliance.collect.forest import Forest
from exchange_compliance.collect.values import sid_to_bytes
from exchange_compliance.facts import Directory
from exchange_compliance.judge.rights import exchange_group_membership, token_serialization_not_denied
from exchange_compliance.judge.verdict import FactUnavailable


class FakeSources:
    """Sources as the reader sees them: the global catalog and each domain's DCs, or why they did not answer."""

    def __init__(
        self, gc: FakeSource | str, child: FakeSource | str, servers: tuple[str, ...] = ("dc01.contoso.test",)
    ):
        self.gc, self.child = gc, child
        self.main_name = "dc01.contoso.test:636"
        self.config = SimpleNamespace(directory=SimpleNamespace(servers=servers))
        self.asked: list[tuple[str, ...]] = []

    def global_catalog(self) -> tuple[FakeSource, str] | str:
        return self.gc if isinstance(self.gc, str) else (self.gc, "dc01.contoso.test:3269")

    def domain_controller(self, hosts: tuple[str, ...]) -> tuple[FakeSource, str] | str:
        self.asked.append(hosts)
        return self.child if isinstance(self.child, str) else (self.child, f"{hosts[0]}:636")


def read(
    servers_per_domain: int = 1, *, gc: bool = True, child: bool = True, monkeypatch: pytest.MonkeyPatch
) -> tuple[Directory, DirectoryReader, FakeSources]:
    entries = forest(servers_per_domain)
    tokens = {e.dn: [f"{ROOT_SID}-1117", f"{ROOT_SID}-1118", f"{ROOT_SID}-515"] for e in entries["root"]}
    child_tokens = {e.dn: [f"{ROOT_SID}-1117", f"{ROOT_SID}-1118", f"{CHILD_SID}-515"] for e in entries["child"]}
    child_tokens[f"CN=CX01,CN=Computers,{CHILD}"] += [f"{CHILD_SID}-2001", f"{ROOT_SID}-1104"]
    main = FakeSource(entries["config"] + entries["root"], tokens=tokens)
    sources = FakeSources(
        FakeSource(entries["config"] + entries["root"] + entries["child"], catalog=True)
        if gc
        else "dc01:3269: refused",
        FakeSource(entries["child"], tokens=child_tokens) if child else "dc11.child.contoso.test:636: timed out",
    )
    monkeypatch.setattr(
        reader_module, "pipelined_reads", lambda connection, dns, attributes: connection.base_reads(dns)
    )
    reader = DirectoryReader(main, ROOT, sources)  # type: ignore[arg-type]
    monkeypatch.setattr(reader, "search", _rooted(reader))
    return reader.read(), reader, sources


def _rooted(reader: DirectoryReader):
    """The rootDSE of the fake DC (the reader's first search) and every other search as it is."""
    search = reader.search

    def answer(base: str, search_filter: str, scope: str, attributes: list[str], **kwargs: object) -> list[dict]:
        if base == "" and scope == ldap3.BASE:
            raw = {
                "configurationNamingContext": [f"CN=Configuration,{ROOT}".encode()],
                "defaultNamingContext": [ROOT.encode()],
            }
            return [{"type": "searchResEntry", "dn": "", "raw_attributes": raw}]
        return search(base, search_filter, scope, attributes, **kwargs)  # type: ignore[arg-type]

    return answer


def test_groups_of_both_domains_are_found_where_they_live(monkeypatch: pytest.MonkeyPatch) -> None:
    directory, _, sources = read(monkeypatch=monkeypatch)
    assert set(directory.computers) == {"EX01", "CX01"}  # the child's computer, found through the global catalog
    names = {g.name: g for g in directory.groups.values()}
    # Global and domain-local groups from their domain's DC; universal ones through the global catalog too.
    assert {"Team", "Deny", "Readers", "Root Deny", "Organization Management", "Exchange Servers"} <= set(names)
    assert names["Team"].scope == "global" and names["Deny"].scope == "domain_local"
    assert names["Organization Management"].scope == "universal"
    cx01, ex01 = directory.computers["CX01"], directory.computers["EX01"]
    assert names["Team"].dn in cx01.member_of and f"CN=Root Deny,OU=Teams,{ROOT}" in cx01.member_of
    assert f"CN=Deny,OU=Teams,{CHILD}" in ex01.member_of  # a root computer in a child domain-local group
    assert names["Organization Management"].dn in names["Team"].member_of
    fsp = directory.groups[f"CN=S-1-5-11,CN=ForeignSecurityPrincipals,{CHILD}"]
    assert fsp.kind == "foreign" and names["Readers"].dn in fsp.member_of
    # The DCs of the child come from CN=Sites; each domain names the DC read.
    assert sources.asked == [("dc11.child.contoso.test", "dc12.child.contoso.test")]
    assert [(d.netbios_name, d.controller, d.sid) for d in directory.domains] == [
        ("LAB", "dc01.contoso.test:636", ROOT_SID),
        ("CHILD", "dc11.child.contoso.test:636", CHILD_SID),
    ]
    assert directory.global_catalog == "dc01.contoso.test:3269"
    assert cx01.token_groups is not None and cx01.token_groups.controller == "dc11.child.contoso.test:636"


def test_the_collected_forest_is_judged_across_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    directory, _, _ = read(monkeypatch=monkeypatch)
    verdict = token_serialization_not_denied(directory, directory.server("CX01"))
    assert "CHILD\\CX01$ \u2192 CHILD\\Team \u2192 LAB\\Organization Management" in verdict.evidence
    assert token_serialization_not_denied(directory, directory.server("EX01")).met


def test_the_listed_dcs_of_a_domain_are_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = forest()
    sources = FakeSources("refused", "refused", servers=("dc01.contoso.test", "dc12.child.contoso.test"))
    monkeypatch.setattr(reader_module, "pipelined_reads", lambda connection, dns, attributes: {})
    reader = DirectoryReader(FakeSource(entries["config"] + entries["root"]), ROOT, sources)  # type: ignore[arg-type]
    monkeypatch.setattr(reader, "search", _rooted(reader))
    forest_reader = Forest(reader, f"CN=Configuration,{ROOT}", ROOT)
    child = next(d for d in forest_reader.partitions if d.netbios_name == "CHILD")
    assert forest_reader._domain_source(child, forest_reader._controllers()) == (
        "no DC of child.contoso.test answered: refused"
    )
    assert sources.asked == [("dc12.child.contoso.test", "dc11.child.contoso.test")]


def test_a_domain_that_does_not_answer_is_recorded_and_its_rows_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    directory, _, _ = read(child=False, monkeypatch=monkeypatch)
    child = next(d for d in directory.domains if d.netbios_name == "CHILD")
    assert child.controller is None
    assert child.unavailable == "no DC of child.contoso.test answered: dc11.child.contoso.test:636: timed out"
    with pytest.raises(FactUnavailable, match=r"CHILD \(child\.contoso\.test\) could not be read"):
        token_serialization_not_denied(directory, directory.server("CX01"))
    with pytest.raises(FactUnavailable, match="CHILD"):  # EX01's token at CX01 (the child's domain-local groups)
        token_serialization_not_denied(directory, directory.server("EX01"))


def test_without_the_global_catalog_the_other_domains_computers_are_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    directory, _, _ = read(gc=False, monkeypatch=monkeypatch)
    assert set(directory.computers) == {"EX01"}
    assert directory.global_catalog is None and "dc01:3269: refused" in (directory.global_catalog_unavailable or "")
    with pytest.raises(FactUnavailable, match="the global catalog could not be read"):
        exchange_group_membership(directory, directory.server("CX01"))


def test_round_trips_do_not_grow_with_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    _, few, _ = read(1, monkeypatch=monkeypatch)
    _, many, _ = read(20, monkeypatch=monkeypatch)
    assert few.round_trips == many.round_trips
    assert (few.pipelined_reads, many.pipelined_reads) == (2, 40)


# --- pipelined base reads over a socket ----------------------------------------------------------------------


def _read_token_groups(answer: Callable[[Request], list[bytes]], dns: list[str], timeout: int) -> dict[str, dict]:
    """pipelined_reads of `dns` from a fake DC that answers with `answer`."""
    with FakeDC(answer) as dc:
        server = ldap3.Server("127.0.0.1", port=dc.port, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, receive_timeout=timeout)
        connection.open()
        found = ldap.pipelined_reads(connection, dns, ["tokenGroups"])
        connection.unbind()
    return found


def test_token_groups_reads_are_sent_without_waiting_and_matched_by_message_id() -> None:
    # The DC answers nothing until it has every request, then answers them last first: a client that waited for
    # each answer before sending the next request would wait for ever.
    dns = [f"CN=EX{i:02d},CN=Computers,{ROOT}" for i in range(1, 41)]
    held: list[Request] = []

    def answer(request: Request) -> list[bytes]:
        if request.operation != "search":
            return org_answer(request)  # type: ignore[return-value]
        held.append(request)
        if len(held) < len(dns):
            return []
        replies = []
        for waiting in reversed(held):
            index = int(waiting.target.split(",")[0][5:])
            value = sid_to_bytes(f"{ROOT_SID}-{index}")
            replies += [
                message(waiting.id, entry(waiting.target, tokenGroups=[value])),
                message(waiting.id, SEARCH_DONE),
            ]
        return replies

    found = _read_token_groups(answer, dns, timeout=5)
    assert len(found) == 40
    for i, dn in enumerate(dns, 1):
        assert found[dn.lower()]["raw_attributes"]["tokenGroups"] == [sid_to_bytes(f"{ROOT_SID}-{i}")]


def test_token_groups_reads_go_on_past_a_slow_answer() -> None:
    # The DC holds its answer to the first read until it has received every other one. Reads sent in batches (send
    # PIPELINE, wait for all their answers, send the next) would wait for it until the receive timeout; a sliding
    # window sends the next read as each answer arrives, so the other 199 go out while the first is outstanding.
    dns = [f"CN=EX{i:03d},CN=Computers,{ROOT}" for i in range(1, 201)]
    held: list[Request] = []
    counts = {"received": 0, "answered": 0}

    def answered(request: Request) -> list[bytes]:
        index = int(request.target.split(",")[0][5:])
        counts["answered"] += 1
        tokens = [sid_to_bytes(f"{ROOT_SID}-{index}")]
        return [message(request.id, entry(request.target, tokenGroups=tokens)), message(request.id, SEARCH_DONE)]

    def answer(request: Request) -> list[bytes]:
        if request.operation != "search":
            return org_answer(request)  # type: ignore[return-value]
        counts["received"] += 1
        if not held:
            held.append(request)
            return []
        replies = answered(request)
        if counts["received"] == len(dns):
            replies += answered(held[0])
        return replies

    found = _read_token_groups(answer, dns, timeout=3)
    assert len(found) == 200 and counts["answered"] == 200
    assert found[dns[0].lower()]["raw_attributes"]["tokenGroups"] == [sid_to_bytes(f"{ROOT_SID}-1")]
