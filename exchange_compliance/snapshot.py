"""Facts as JSON and back: the evidence file every run writes, and `--org-snapshot` replays.

Collect at a customer, judge later; replay a bug report. The format is the facts' own field names, with
bytes as base64, datetimes as ISO 8601 and a `type` tag where a value can be of several dataclasses.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import types
import typing
from datetime import datetime
from pathlib import Path

from . import facts
from .config import shown
from .facts import OrgFacts

FORMAT = "exchange-compliance-facts/1"


class SnapshotError(ValueError):
    pass


@functools.cache
def _hints(kind: type) -> dict[str, object]:
    # Resolving a dataclass's (string) annotations costs an eval per field; a 200-server org decodes thousands
    # of objects of a dozen classes.
    return typing.get_type_hints(kind, vars(facts))


def _encode(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        encoded = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, **encoded}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(kind: object, value: object, where: str) -> object:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        if isinstance(value, dict) and "type" in value:
            for option in options:
                if dataclasses.is_dataclass(option) and option.__name__ == value["type"]:
                    return _decode(option, value, where)
        for option in options:
            if option is not type(None):
                return _decode(option, value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object")
        hints = _hints(typing.cast(type, kind))
        arguments = {}
        for f in dataclasses.fields(kind):
            if f.name in value:
                arguments[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SnapshotError(f"{where}.{f.name}: missing")
        try:
            return kind(**arguments)
        except facts.InvalidFact as exc:
            raise SnapshotError(f"{where}.{exc.key}: {exc}") from None
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))
    if origin is dict:
        _, item = typing.get_args(kind)
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object")
        # A key is a name from the file: shown escaped when it holds a line break or an escape sequence.
        return {k: _decode(item, v, f"{where}.{k}" if k.isprintable() else f"{where}[{k!r}]") for k, v in value.items()}
    if kind is bytes:
        try:
            return base64.b64decode(str(value), validate=True)
        except ValueError:
            raise SnapshotError(f"{where}: not base64") from None
    if kind is datetime:
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            raise SnapshotError(f"{where}: not a date: {value!r}") from None
    # bool is an int in Python; `true` where a number belongs is a hand edit, not 1.
    if kind in (int, str, bool, float) and (not isinstance(value, kind) or (kind is not bool and type(value) is bool)):
        raise SnapshotError(f"{where}: expected {kind.__name__}, got {shown(value)}")
    return value


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise SnapshotError(f"{where}: expected a list")
    return value


def dumps(org: OrgFacts) -> str:
    return json.dumps({"format": FORMAT, "facts": _encode(org)}, indent=1, sort_keys=False)


def loads(text: str, source: str = "snapshot") -> OrgFacts:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{source}: not JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested thousands deep: no evidence file is
        raise SnapshotError(f"{source}: not an evidence file: nested too deeply") from None
    except ValueError:  # an integer of more than 4,300 digits, which int() refuses to convert
        raise SnapshotError(f"{source}: not an evidence file: an integer too long to read") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SnapshotError(f"{source}: not an exchange-compliance facts file (format {FORMAT})")
    return _decode(OrgFacts, document.get("facts"), source)  # type: ignore[return-value]


def write(org: OrgFacts, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(dumps(org), encoding="utf-8")
    temporary.replace(path)
    return path


def read(path: Path) -> OrgFacts:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path}: not UTF-8 text (byte {exc.start}): not an evidence file") from None
    return loads(text, str(path))
