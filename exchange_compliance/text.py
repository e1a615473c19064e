"""Text from AD, servers and files, as the suite prints it: control characters spelled out, lists of names cut short.

A server, group or certificate name is data: an ESC in it would drive the admin's terminal or a CI log viewer, a
CR rewrite the line it is on, a bidi override reorder what the reader sees. Everything the suite prints to the
terminal goes through `printable` (or `one_line`); the HTML report escapes its own way, the fix plan quotes for
PowerShell (judge/powershell.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# How many names a list shows before "and N more": enough to recognise a pattern, short enough for one line.
SHOWN_NAMES = 3


def _spelled(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, lines: bool = False) -> str:
    """`text` with every character that is not printable spelled out as `\\x1b`, `\\u202e`: C0 and C1 controls
    (ESC, BEL, CR, LF, NEL), DEL, bidi overrides and other format characters, line and paragraph separators.
    `lines=True` keeps LF as a line break (multi-line evidence); a CR is spelled out even then."""
    if text.isprintable():
        return text
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(char if char.isprintable() else _spelled(char) for char in text)


def one_line(text: str, secret: str | None = None, limit: int = 300) -> str:
    """A message for one line of the terminal and the report: control characters (line breaks included) spelled
    out, at most `limit` characters, and never `secret` (a DC or server could echo what it was sent)."""
    if secret:
        text = text.replace(secret, "[password]")
    shown = printable(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


def name_list(names: Sequence[str], shown: int = SHOWN_NAMES) -> str:
    """`EX01, EX02, EX03 and 197 more`: the first `shown` names, and how many more."""
    head = ", ".join(names[:shown])
    return f"{head} and {len(names) - shown} more" if len(names) > shown else head


def natural(name: str) -> tuple:
    """A sort key that puts EX9 before EX10."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def servers_phrase(servers: Sequence[str], total: int) -> str:
    """`EX05`, `3 of 200 servers (EX03, EX04, EX05)`, `all 200 servers (EX001, EX002, EX003 and 197 more)`."""
    if len(servers) == 1 and total != 1:
        return servers[0]
    if len(servers) == total:
        return f"all {total} servers ({name_list(servers)})" if total > 1 else f"the only server ({servers[0]})"
    return f"{len(servers)} of {total} servers ({name_list(servers)})"


def grouped(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(reason, name) pairs as (reason, [names]) with each name once: the reason said by most names first, then
    in the order first seen."""
    groups: dict[str, dict[str, None]] = {}  # dicts as ordered sets: a thousand names stay linear
    for reason, name in pairs:
        groups.setdefault(reason, {})[name] = None
    order = {reason: index for index, reason in enumerate(groups)}
    ranked = sorted(groups, key=lambda reason: (-len(groups[reason]), order[reason]))
    return [(reason, list(groups[reason])) for reason in ranked]
