"""The requirement catalog: ID, title, severity, scope, description and source articles of every requirement."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Source:
    """An article a requirement comes from, as an admin finds it: title, KB number, public address, who wrote it.
    A field the article does not give is empty: nothing here is guessed."""

    title: str
    kb: str = ""
    url: str = ""  # http or https only
    publisher: str = ""
    author: str = ""

    @property
    def byline(self) -> str:
        """`author, publisher, KB n`, of what the article gives."""
        return ", ".join(part for part in (self.author, self.publisher, f"KB {self.kb}" if self.kb else "") if part)

    @property
    def text(self) -> str:
        """`Title (author, publisher, KB n) url`: the citation as one readable string."""
        return self.title + (f" ({self.byline})" if self.byline else "") + (f" {self.url}" if self.url else "")


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    severity: str
    scope: str  # "server" or "org"
    applies_to: str
    description: str
    sources: tuple[Source, ...]
    gate: bool = False  # a CU gate requirement: it blocks at any severity in a gate run
    needs_target: bool = False  # judged only in a CU gate run: it is about the target version (--target-version)

    @property
    def source(self) -> str:
        """The sources as one readable string: latest.json's `source`, the fix plan's `# Source:` line."""
        return "; ".join(source.text for source in self.sources)


def _articles(table: dict[str, dict[str, str]]) -> dict[str, Source]:
    articles = {}
    for key, fields in table.items():
        article = Source(**fields)
        if article.url and urlsplit(article.url).scheme not in ("http", "https"):
            raise ValueError(f"catalog.toml: [article.{key}] url: only http and https addresses are cited")
        articles[key] = article
    return articles


@cache
def catalog() -> dict[str, Requirement]:
    data = tomllib.loads(resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8"))
    articles = _articles(data.pop("article", {}))
    requirements = {}
    for requirement_id, entry in data.items():
        cited = entry.pop("sources")
        unknown = [key for key in cited if key not in articles]
        if not cited or unknown:
            raise ValueError(f"catalog.toml: [{requirement_id}] sources: cite at least one [article.*] ({unknown})")
        requirement = Requirement(id=requirement_id, sources=tuple(articles[key] for key in cited), **entry)
        if requirement.severity not in SEVERITIES or requirement.scope not in ("server", "org"):
            raise ValueError(f"catalog.toml: [{requirement_id}] has a bad severity or scope")
        requirements[requirement_id] = requirement
    return requirements


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
