"""Strict TOML: typed reads of a TOML file's tables for the suite's own files (the org config, the waivers).

Strict, because a typo in a nightly job's file must not pass silently: a key nobody read is an error, a value of
the wrong type or out of range is one, and every error is one line naming the file, the table and the key, with
the value shown escaped (a line break or an escape sequence in it is shown, not acted on) and cut short. What the
keys mean is the reader's (config.py for the org config, plugin/waivers.py for the waivers).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

# The longest wait any timeout in the suite's files may set (StrictTable.number's default): an hour is already far
# more than any answer needs.
MAX_SECONDS = 3600
# What a POSIX shell accepts as a variable name. Anything else in a *_env key is most likely the secret itself.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """A config problem, with a message that names the file and the key."""


class StrictTable:
    """Typed reads from one TOML table, each error naming the file, the table and the key; `finish()` rejects keys
    nobody read (typos). The org config and the waivers file are read with it."""

    def __init__(self, data: object, source: Path, name: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.data, self.source, self.name = data, source, name
        self.read: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.source}: [{self.name}] {key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: object = ..., what: str = "") -> object:
        self.read.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._where(key)}: required key is missing")
            return default
        value = self.data[key]
        # bool is an int in Python; a port of `true` is a typo, not 1.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool and bool not in _tuple(kind)):
            expected = what or " or ".join(k.__name__ for k in _tuple(kind))
            raise ConfigError(f"{self._where(key)}: expected {expected}, got {shown(value)}")
        return value

    def text(self, key: str, default: object = ...) -> str:
        return self.get(key, str, default)  # type: ignore[return-value]

    def integer(self, key: str, default: object = ..., low: int = 0, high: int = 65535) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:  # type: ignore[operator]
            raise ConfigError(f"{self._where(key)}: {shown(value)} is out of range {low}..{high}")
        return value  # type: ignore[return-value]

    def number(self, key: str, default: object = ..., high: float = MAX_SECONDS) -> float:
        """A positive number of at most `high`: TOML also allows inf and nan, which would pass `> 0` and break a
        timer or a socket later, and a huge one overflows where it is turned into a deadline."""
        value = self.get(key, (int, float), default, what="a number")
        if not 0 < value <= high:  # type: ignore[operator]  # false for nan too
            raise ConfigError(f"{self._where(key)}: must be positive and at most {high:g}, got {shown(value)}")
        return float(value)  # type: ignore[arg-type]

    def flag(self, key: str, default: object = ...) -> bool:
        return self.get(key, bool, default, what="true or false")  # type: ignore[return-value]

    def choice(self, key: str, choices: tuple[str, ...], default: object = ...) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(f"{self._where(key)}: {shown(value)} is not one of {', '.join(choices)}")
        return value

    def strings(self, key: str, default: object = ()) -> tuple[str, ...]:
        value = self.get(key, list, default if default is None else list(default), what="a list of strings")  # type: ignore[arg-type]
        if value is None:
            return ()
        if not all(isinstance(item, str) for item in value):  # type: ignore[union-attr]
            raise ConfigError(f"{self._where(key)}: expected a list of strings, got {shown(value)}")
        return tuple(value)  # type: ignore[arg-type]

    def env_name(self, key: str) -> str:
        return self._env_name(key, self.text(key))

    def optional_env_name(self, key: str) -> str | None:
        value = self.text(key, None) if key in self.data else None
        self.read.add(key)
        return None if value is None else self._env_name(key, value)

    def _env_name(self, key: str, value: str) -> str:
        # Never echo a value that is not a variable name: it may be the password typed in the wrong place.
        if not ENV_NAME.fullmatch(value):
            raise ConfigError(
                f"{self._where(key)}: must name an environment variable (the secret itself never goes in the file)"
            )
        return value

    def file(self, key: str) -> Path | None:
        value = self.text(key, None) if key in self.data else None
        if value is None:
            self.read.add(key)
            return None
        path = (self.source.parent / value).resolve()
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self._where(key)}: cannot read {path}: {exc.strerror}") from None
        return path

    def table(self, key: str) -> StrictTable:
        self.read.add(key)
        return StrictTable(self.data.get(key), self.source, f"{self.name}.{key}" if self.name else key)

    def retired(self, key: str, why: str) -> None:
        """A key of earlier versions: a config copied from an old example gets told what to do, not "unknown key"."""
        if key in self.data:
            raise ConfigError(f"{self._where(key)}: no longer a setting ({why}): remove it")
        self.read.add(key)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ConfigError(f"{self._where(unknown[0])}: unknown key")


def shown(value: object, limit: int = 80) -> str:
    """A value from a file for a one-line message: repr (a line break or an escape sequence is shown, not acted
    on), cut to `limit` characters (a 4,000-digit number or a long list says enough in its start)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def read_text(path: Path, where: str) -> str:
    """The file's text; ConfigError when it is not UTF-8 (OSError is the caller's: it says it in its words)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        # Saved in a Windows code page, most likely. One line, and none of the content: it may hold anything.
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def read_toml(path: Path) -> dict:
    """A TOML file as a dict; ConfigError naming the file when it cannot be read, is not UTF-8 or not TOML."""
    try:
        text = read_text(path, str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValueError:  # tomllib leaves it to int(), which refuses more than 4,300 digits
        raise ConfigError(f"{path}: not valid TOML: an integer too long to read") from None
