"""Directory rights on Exchange server objects: who may serialize tokens and impersonate (KB 2898571;
"O365 Hybrid Wizard - Hybrid Agent Fails to Validate")."""

from exchange_compliance.judge import rights
from exchange_compliance.plugin import requirement


@requirement("ACL-01")
def test_no_deny_of_token_serialization_to_the_server_account(directory, server, judge):
    """No deny ACE in effect stops the server's computer account, nesting included, from holding
    ms-Exch-EPI-Token-Serialization on any Exchange server object."""
    verdict = judge(rights.token_serialization_not_denied(directory, server))
    assert verdict.met, verdict.evidence


@requirement("ACL-02")
def test_exchange_servers_hold_token_serialization(directory, server, judge):
    """The Exchange Servers group holds ms-Exch-EPI-Token-Serialization on the server object."""
    verdict = judge(rights.exchange_servers_hold_right(directory, server, rights.TOKEN_SERIALIZATION))
    assert verdict.met, verdict.evidence


@requirement("ACL-03")
def test_exchange_servers_hold_impersonation(directory, server, judge):
    """The Exchange Servers group holds ms-Exch-EPI-Impersonation on the server object."""
    verdict = judge(rights.exchange_servers_hold_right(directory, server, rights.IMPERSONATION))
    assert verdict.met, verdict.evidence


@requirement("GRP-01")
def test_server_account_is_in_the_exchange_groups(directory, server, judge):
    """The computer account is a member of Exchange Servers and of Exchange Trusted Subsystem."""
    verdict = judge(rights.exchange_group_membership(directory, server))
    assert verdict.met, verdict.evidence
