"""The judges' caches: one scheme (judge/memo.py), and one clear_caches() that empties every one of them."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from factories import NOW, acl_directory, directory, ews, make_cert, probe, server, store_cert, thumb

import exchange_compliance.judge
from exchange_compliance.judge import certificates, memo, rights, web_services
from exchange_compliance.judge.memo import IdentityCache, clear_caches
from exchange_compliance.judge.security_descriptor import parse_descriptor

JUDGE = Path(exchange_compliance.judge.__file__).parent


def judge_caches() -> dict[str, object]:
    """Every cache a judge module holds at its top level: IdentityCaches and value-cached functions."""
    found = {}
    for path in sorted(JUDGE.glob("*.py")):
        module = importlib.import_module(f"exchange_compliance.judge.{path.stem}")
        for name, value in vars(module).items():
            # A cached function counts where it is defined (urllib's urlsplit caches too, and is not ours).
            ours = hasattr(value, "cache_info") and value.__module__ == module.__name__
            if isinstance(value, IdentityCache) or ours:
                found.setdefault(id(value), (f"{path.stem}.{name}", value))
    return dict(found.values())


def size(cache: object) -> int:
    return len(cache) if isinstance(cache, IdentityCache) else cache.cache_info().currsize  # type: ignore[attr-defined]


def test_clear_caches_empties_every_judge_cache():
    # Held here: an identity cache's entry goes with its object.
    rights_directory = acl_directory(n=2, nesting={"ETS": ("DA",)})
    # descriptors, tokens; and denied, where the deny is set and what it covers
    rights.token_serialization_not_denied(rights_directory, rights_directory.servers[0])
    ews_directory = directory(vdirs=(ews("EX01", "https://a/EWS", None),))
    web_services.ews_urls_set(server(), ews_directory, hybrid=False)
    der = make_cert(not_after=NOW)
    store = probe(store_cert(der))
    certificates.find_in_store(store, thumb(der))  # the store's thumbprint index; store_cert parsed the DER
    caches = judge_caches()
    assert set(caches) >= {
        "access._index",
        "certificates._store_index",
        "certificates.certificate_info",
        "security_descriptor._parse_cached",
        "web_services._index",
    }
    assert {name: size(cache) > 0 for name, cache in caches.items()} == dict.fromkeys(caches, True)
    clear_caches()
    assert {name: size(cache) for name, cache in caches.items()} == dict.fromkeys(caches, 0)


def test_a_descriptor_is_parsed_again_after_clear_caches():
    data = acl_directory(n=1).servers[0].security_descriptor or b""
    first = parse_descriptor(data)
    assert parse_descriptor(bytes(bytearray(data))) is first  # equal bytes share one entry
    memo.clear_caches()
    assert parse_descriptor(data) is not first


def test_the_judges_cache_only_through_memo():
    for path in JUDGE.glob("*.py"):
        if path.name != "memo.py":
            source = path.read_text(encoding="utf-8")
            assert not re.search(r"\blru_cache\b|functools|@cache\b", source), path.name
