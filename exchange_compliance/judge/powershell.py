"""Quoting values from Active Directory and from the servers into the PowerShell of a fix.

A fix is PowerShell an admin copies and runs with rights over the whole org (and the fix plan .ps1 collects
them). The names in it come from AD and from the servers, and whoever can name a group, a server object or a
certificate chooses them: `Team $(Remove-Item C:\\ -Recurse)` inside "..." would run when the admin runs the fix,
and a `"` or a backtick would break the command. Every such value goes through one of these functions; the
suite's own fixed text does not need to.

The character sets follow PowerShell's tokenizer (CharExtensions.IsDoubleQuote / IsSingleQuote,
ScanStringExpandable, ScanStringLiteral): the typographic quotes end a string just as the ASCII ones do.
"""

from __future__ import annotations

import re

# In "...": `$` starts a variable or a $(subexpression), the backtick escapes, any of the quotes ends the string.
_EXPANDABLE = frozenset('$`"\u201c\u201d\u201e')
# In '...' nothing expands; any of these ends the string, and two in a row stand for the second one.
_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
# What PowerShell reads back unchanged as a bare command argument: no operator, separator, quote, `$`, `@`,
# comma or space, and a letter or digit first (a leading `-` would make it a parameter name).
_BAREWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\\-]*")
# A bare argument that PowerShell would parse as a number (1e5, 0x1F, 12kb, 42d...) and pass on converted. Wider
# than the real grammar on purpose: what it catches in error is only quoted, which changes nothing.
_NUMBER_LIKE = re.compile(
    r"(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|0[xX][0-9A-Fa-f]+|0[bB][01]+)[A-Za-z]{0,4}"
)


def quote(value: str) -> str:
    """`value` as one PowerShell string: in double quotes when nothing in it expands or ends the string (the
    common case, so fixes read as an admin would type them), else as a single-quoted literal."""
    # A `$` right before the closing quote starts nothing ("EX02$", a computer's sAMAccountName, is literal);
    # anywhere else it could begin a variable or a subexpression.
    body = value[:-1] if value.endswith("$") else value
    if value.isprintable() and not _EXPANDABLE.intersection(body):
        return f'"{value}"'
    return literal(value)


def literal(value: str) -> str:
    """`value` as a single-quoted literal: nothing in it expands, every single quote (ASCII or typographic) is
    doubled so it cannot end the string.

    Characters that are not printable (line breaks above all, also tabs, bidi overrides, zero-width characters)
    are not written raw: inside '...' a line break would be harmless to PowerShell, but the fix plan splits fixes
    into lines, a reader sees two commands where there is one, and an invisible character makes the command on
    screen differ from what runs. Replacing them would target another name, so they are spelled out instead,
    exactly and on one line: ('Team' + [char]0x000A + 'x'), a parenthesised expression that is a valid argument
    anywhere a string is.
    """
    if value.isprintable():
        return _single(value)
    parts: list[str] = []
    run: list[str] = []
    for char in value:
        if char.isprintable():
            run.append(char)
            continue
        if run or not parts:  # the first operand is a string, so `+` concatenates rather than adds char codes
            parts.append(_single("".join(run)))
            run = []
        parts.append(_char(char))
    if run:
        parts.append(_single("".join(run)))
    return "(" + " + ".join(parts) + ")"


def argument(value: str) -> str:
    """`value` as a bare command argument (`-Server EX01`, `-Thumbprint 9F2B...`, `-InternalUrl https://...`)
    when PowerShell would read it back unchanged, else quoted: a bare `EX01;Remove-Item ...` would be two
    commands, a bare `-Confirm` a parameter."""
    if _BAREWORD.fullmatch(value) and not _NUMBER_LIKE.fullmatch(value):
        return value
    return quote(value)


def comment(value: str) -> str:
    """`value` for a `# ...` comment: a comment ends at the line break, so one in a name would start a command
    line. Characters that are not printable are shown as <U+000A> (the comment is for reading, not running)."""
    return "".join(char if char.isprintable() else f"<U+{ord(char):04X}>" for char in value)


def _single(text: str) -> str:
    return "'" + "".join(char * 2 if char in _SINGLE_QUOTES else char for char in text) + "'"


def _char(char: str) -> str:
    code = ord(char)
    # [char] holds one UTF-16 unit; a code point above the BMP needs a surrogate pair, which ConvertFromUtf32 makes.
    return f"[char]0x{code:04X}" if code <= 0xFFFF else f"[char]::ConvertFromUtf32(0x{code:X})"
