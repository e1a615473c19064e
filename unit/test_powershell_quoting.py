"""Quoting AD- and server-sourced values into fix PowerShell (judge/powershell.py).

`read_back` is a small model of how PowerShell's tokenizer reads the tokens quote() makes (ScanStringLiteral,
ScanStringExpandable): it gives the value PowerShell would see, and fails if anything in the token would
expand or the token would end before its last character (which is where injected code would start).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange_compliance.judge.powershell import argument, comment, literal, quote

SINGLE = "'\u2018\u2019\u201a\u201b"
DOUBLE = '"\u201c\u201d\u201e'


def _single_quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the '...' at text[start], and the index after its closing quote."""
    assert text[start] in SINGLE
    out, i = [], start + 1
    while i < len(text):
        char = text[i]
        if char in SINGLE:
            if i + 1 < len(text) and text[i + 1] in SINGLE:  # two in a row: the second one, literally
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise AssertionError(f"unterminated single-quoted string: {text!r}")


def read_back(token: str) -> str:
    """The string PowerShell reads from one token made by quote()/literal(), which must span the whole token."""
    if token[0] == '"':
        inner = token[1:-1]
        assert token[-1] == '"' and not set(inner) & set(DOUBLE), token
        assert "`" not in inner and "$" not in inner[:-1], f"would expand: {token!r}"
        return inner
    if token[0] in SINGLE:
        value, end = _single_quoted(token, 0)
        assert end == len(token), f"the string ends early, the rest would run: {token!r}"
        return value
    # ('text' + [char]0x000A + [char]::ConvertFromUtf32(0xE0041) + 'text')
    assert token[0] == "(" and token[-1] == ")", token
    parts, i = [], 1
    while True:
        if token[i] in SINGLE:
            value, i = _single_quoted(token, i)
            parts.append(value)
        else:
            match = re.compile(r"\[char\]0x([0-9A-F]{4})|\[char\]::ConvertFromUtf32\(0x([0-9A-F]+)\)").match(token, i)
            assert match, f"unexpected expression at {i}: {token!r}"
            parts.append(chr(int(match.group(1) or match.group(2), 16)))
            i = match.end()
        if token[i] == ")":
            assert i == len(token) - 1, token
            assert parts and token[1] in SINGLE, f"must start with a string so + concatenates: {token!r}"
            return "".join(parts)
        assert token.startswith(" + ", i), token
        i += 3


# --- quote ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Exchange Servers",
        "Serveurs Exchange",
        "Sous-système approuvé Exchange",
        "LAB\\Exchange Servers",
        "O'Brien",
        "'; Remove-Item C:\\ -Recurse; '",  # nothing in it ends "..." or expands: inert as it is
    ],
)
def test_plain_names_stay_double_quoted(value: str) -> None:
    assert quote(value) == f'"{value}"'


def test_a_trailing_dollar_stays_double_quoted() -> None:
    # A computer's sAMAccountName: "$" before the closing quote starts nothing.
    assert quote("EX02$") == '"EX02$"'
    assert quote("$") == '"$"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Team $(Remove-Item C:\\ -Recurse)", "'Team $(Remove-Item C:\\ -Recurse)'"),
        ("Team $env:USERNAME", "'Team $env:USERNAME'"),
        ("EX02$$", "'EX02$$'"),
        ('Team "x" -Members Everyone', "'Team \"x\" -Members Everyone'"),
        ("Team `$(calc)", "'Team `$(calc)'"),
        ("Team`", "'Team`'"),
        ("O'Brien $(x)", "'O''Brien $(x)'"),
        ("'; Remove-Item C:\\ -Recurse; '$x", "'''; Remove-Item C:\\ -Recurse; ''$x'"),
    ],
)
def test_hostile_values_become_single_quoted_literals(value: str, expected: str) -> None:
    assert quote(value) == expected
    assert read_back(quote(value)) == value


@pytest.mark.parametrize("mark", ["\u201c", "\u201d", "\u201e"])
def test_typographic_double_quotes_end_a_double_quoted_string(mark: str) -> None:
    value = f"Team {mark}; Remove-Item C:\\; {mark}"
    assert quote(value) == f"'{value}'"


@pytest.mark.parametrize("mark", ["'", "\u2018", "\u2019", "\u201a", "\u201b"])
def test_every_single_quote_is_doubled(mark: str) -> None:
    value = f"Team {mark}$(Remove-Item C:\\){mark}"
    assert quote(value) == f"'Team {mark}{mark}$(Remove-Item C:\\){mark}{mark}'"
    assert read_back(quote(value)) == value


def test_line_breaks_are_spelled_out_on_one_line() -> None:
    value = "Team\nRemove-Item C:\\ -Recurse"
    assert quote(value) == "('Team' + [char]0x000A + 'Remove-Item C:\\ -Recurse')"
    assert quote("\r\nx") == "('' + [char]0x000D + [char]0x000A + 'x')"
    assert quote("x\u2028") == "('x' + [char]0x2028)"
    assert quote("tag\U000e0041") == "('tag' + [char]::ConvertFromUtf32(0xE0041))"
    for hostile in (value, "a\rb", "a\x85b", "\x00", "a\u202eb", "x\u2028y'$(z)"):
        assert len(quote(hostile).splitlines()) == 1
        assert read_back(quote(hostile)) == hostile


def test_empty_string() -> None:
    assert quote("") == '""'
    assert literal("") == "''"


@given(st.text())
def test_any_value_reads_back_exactly_from_one_line(value: str) -> None:
    for token in (quote(value), literal(value)):
        assert read_back(token) == value
        assert len(token.splitlines()) == 1


# --- literal, argument, comment ------------------------------------------------------------------------------


def test_literal_is_always_single_quoted() -> None:
    assert literal("{4dc3e181-e14b-4a21-b022-59fc669b0914}") == "'{4dc3e181-e14b-4a21-b022-59fc669b0914}'"
    assert literal("a'b") == "'a''b'"


@pytest.mark.parametrize(
    "value",
    ["EX01", "ex01.lab.contoso.test", "https://mail.contoso.com/EWS/Exchange.asmx", "9F2B" * 10, "0B1A" * 10],
)
def test_plain_arguments_stay_bare(value: str) -> None:
    assert argument(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("EX01;Remove-Item C:\\", '"EX01;Remove-Item C:\\"'),
        ("EX01 -Confirm:$false", "'EX01 -Confirm:$false'"),
        ("-Confirm", '"-Confirm"'),
        ("EX01,EX02", '"EX01,EX02"'),
        ("EX01|calc", '"EX01|calc"'),
        ("https://x/$(calc)", "'https://x/$(calc)'"),
        ("@splat", '"@splat"'),
        ("", '""'),
        # PowerShell would read these bare as numbers and pass them on converted.
        ("1" * 40, '"' + "1" * 40 + '"'),
        ("1E5", '"1E5"'),
        ("0x1F", '"0x1F"'),
        ("12kb", '"12kb"'),
        ("42D", '"42D"'),
    ],
)
def test_other_arguments_are_quoted(value: str, expected: str) -> None:
    assert argument(value) == expected


def test_comments_cannot_be_ended_by_a_name() -> None:
    text = comment("EX01\r\nRemove-Item C:\\ -Recurse\u2028x")
    assert text == "EX01<U+000D><U+000A>Remove-Item C:\\ -Recurse<U+2028>x"
    assert comment("Serveurs Exchange $(x)") == "Serveurs Exchange $(x)"  # nothing runs in a comment
