"""Text from AD and servers as the suite prints it: control characters spelled out, long lists cut short."""

from __future__ import annotations

import pytest

from exchange_compliance.text import grouped, name_list, one_line, printable, servers_phrase

# What a hostile name could carry: a terminal escape (CSI, an OSC title change ended by BEL), a line rewrite,
# a line break, C1 controls (NEL, the 8-bit CSI), DEL, and bidi overrides/isolates that reorder what is read.
HOSTILE = {
    "ESC": "\x1b[2J\x1b[31mEX01",
    "OSC title + BEL": "\x1b]0;pwned\x07EX01",
    "CR": "EX01\rEX99 passed",
    "LF": "EX01\nexchange-compliance: lab: PASS",
    "C1 NEL and CSI": "EX01\x85\x9b31m",
    "DEL": "EX01\x7f",
    "RLO": "EX01\u202egnp.exe",
    "isolate": "\u2066EX01\u2069",
    "line separator": "EX01\u2028EX02",
}


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_control_and_format_character_is_spelled_out(name):
    shown = printable(name)
    assert shown.isprintable()
    assert "EX01" in shown


def test_the_spelling_names_the_character():
    assert printable("a\x1bb\x07c\rd\ne\x85f\u202eg\U000e0001") == "a\\x1bb\\x07c\\x0dd\\x0ae\\x85f\\u202eg\\U000e0001"


def test_lines_keeps_line_breaks_but_not_what_is_inside_a_line():
    assert printable("first \x1b[31m\nsecond\r", lines=True) == "first \\x1b[31m\nsecond\\x0d"


def test_printable_text_is_returned_as_it_is():
    text = "CN=EX01,CN=Servers; Müller's Exchange-Server (Zürich) — 日本"
    assert printable(text) is text


def test_one_line_spells_out_line_breaks_hides_the_secret_and_cuts_long_text():
    assert one_line("bind failed for pw123\r\nagain", secret="pw123") == "bind failed for [password]\\x0d\\x0aagain"
    assert one_line("x" * 500, limit=10) == "x" * 9 + "\u2026"


def test_name_list_says_how_many_more():
    names = [f"EX{i:03d}" for i in range(1, 201)]
    assert name_list(names) == "EX001, EX002, EX003 and 197 more"
    assert name_list(names[:3]) == "EX001, EX002, EX003"
    assert name_list(["EX01"]) == "EX01"


def test_servers_phrase_counts_against_the_servers_checked():
    names = [f"EX{i:03d}" for i in range(1, 201)]
    assert servers_phrase(names, 200) == "all 200 servers (EX001, EX002, EX003 and 197 more)"
    assert servers_phrase(names[:2], 200) == "2 of 200 servers (EX001, EX002)"
    assert servers_phrase(["EX05"], 6) == "EX05"
    assert servers_phrase(["EX01"], 1) == "the only server (EX01)"


def test_grouped_puts_the_most_said_reason_first_and_names_each_server_once():
    pairs = [("refused", "EX01"), ("timed out", "EX02"), ("timed out", "EX03"), ("timed out", "EX02")]
    assert grouped(pairs) == [("timed out", ["EX02", "EX03"]), ("refused", ["EX01"])]
