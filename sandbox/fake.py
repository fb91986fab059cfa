"""Deterministic fake CRM people and companies for seeding the sandbox.

``person(seed, i)`` and ``company(seed, i)`` are pure functions of their arguments, so record *i*
of a seed is the same in every process and a million records can be generated lazily. Data is
realistic enough to exercise a sync: unicode names (accents, Cyrillic, CJK, Arabic, apostrophes),
some empty values, and modification timestamps shared by small groups of consecutive records, so
pages of any size end inside a tie (the case naive incremental syncs lose records on).
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

__all__ = ["BASE_EPOCH_MS", "TIE_GROUP", "Company", "Person", "company", "modstamp_ms", "person"]

# 2024-01-01T00:00:00Z: seeded records were "last modified" after this instant.
BASE_EPOCH_MS = 1_704_067_200_000
# Consecutive records share one modification timestamp in groups of this size.
TIE_GROUP = 3

_FIRST = (
    "Anna",
    "Zoë",
    "José",
    "Søren",
    "Łukasz",
    "Amélie",
    "Björn",
    "Chloé",
    "Đorđe",
    "Ingrid",
    "Mária",
    "Nuño",
    "Oğuz",
    "Renée",
    "Sérgio",
    "Thérèse",
    "Ünal",
    "Yasmin",
    "Mohammed",
    "Priya",
    "Wei",
    "Yuki",
    "Olusegun",
    "Aoife",
    "Siobhán",
    "Kateřina",
    "Mateus",
    "Jürgen",
    "Elif",
    "Noah",
    "Мария",
    "Иван",
    "李",
    "美咲",
    "محمد",
    "Δημήτρης",
    "Sophie",
    "Liam",
    "Emma",
    "Lucas",
)
_LAST = (
    "Müller",
    "García",
    "O'Brien",
    "Nguyễn",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Novák",
    "Jensen",
    "Papadopoulos",
    "Smith",
    "Johnson",
    "Fernández",
    "Åberg",
    "Øvergaard",
    "Çelik",
    "Schäfer",
    "van der Berg",
    "de la Cruz",
    "Ó Súilleabháin",
    "Lefèvre",
    "Zając",
    "Hernández-López",
    "Kim",
    "Tanaka",
    "Иванова",
    "王",
    "佐藤",
    "الحسن",
    "Οικονόμου",
    "Brown",
    "Wilson",
    "Martin",
    "Bernard",
)
_UNFOLDABLE = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae"}
)
_CITIES = (
    ("Berlin", "Germany"),
    ("Paris", "France"),
    ("Madrid", "Spain"),
    ("Dublin", "Ireland"),
    ("Warsaw", "Poland"),
    ("Milan", "Italy"),
    ("Copenhagen", "Denmark"),
    ("Amsterdam", "Netherlands"),
    ("Lisbon", "Portugal"),
    ("Vienna", "Austria"),
    ("New York", "United States"),
    ("San Francisco", "United States"),
    ("Toronto", "Canada"),
    ("London", "United Kingdom"),
    ("Tokyo", "Japan"),
    ("São Paulo", "Brazil"),
    ("Zürich", "Switzerland"),
    ("Kraków", "Poland"),
)
_TITLES = (
    "CEO",
    "CTO",
    "Head of Sales",
    "Account Executive",
    "Data Protection Officer",
    "Marketing Manager",
    "Engineer",
    "Buyer",
    "VP Operations",
    None,
)
_TIERS = ("Gold", "Silver", "Bronze", None)
_INDUSTRIES = ("Technology", "Manufacturing", "Retail", "Finance", "Healthcare", "Education", None)
_COMPANY_WORDS = (
    "Nordic",
    "Alpine",
    "Atlantic",
    "Baltic",
    "Iberia",
    "Danube",
    "Rhein",
    "Solar",
    "Quantum",
    "Lumen",
    "Vertex",
    "Helios",
    "Orbit",
    "Cobalt",
    "Granite",
    "Aurora",
)
_COMPANY_SUFFIX = ("GmbH", "SAS", "S.L.", "Ltd", "AG", "B.V.", "S.p.A.", "Inc.", "Sp. z o.o.", "ApS")


@dataclass(frozen=True, slots=True)
class Person:
    index: int
    first_name: str
    last_name: str
    email: str
    phone: str | None
    title: str | None
    city: str
    country: str
    tier: str | None
    lead_score: int
    company_index: int
    created_ms: int
    modified_ms: int


@dataclass(frozen=True, slots=True)
class Company:
    index: int
    name: str
    domain: str
    industry: str | None
    employees: int | None
    annual_revenue: float | None
    city: str
    country: str
    created_ms: int
    modified_ms: int


def modstamp_ms(i: int) -> int:
    """The seeded last-modified time of record ``i``: ascending, in ties of :data:`TIE_GROUP`."""
    return BASE_EPOCH_MS + (i // TIE_GROUP) * 1000


def _ascii(s: str) -> str:
    decomposed = unicodedata.normalize("NFKD", s.translate(_UNFOLDABLE)).lower()
    out = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in out if c.isascii() and c.isalnum()) or "x"


def person(seed: int, i: int) -> Person:
    rng = random.Random(seed * 1_000_003 + i)  # noqa: S311 - deterministic fake data
    first = rng.choice(_FIRST)
    last = rng.choice(_LAST)
    city, country = rng.choice(_CITIES)
    # A stable, unique e-mail: HubSpot contacts are unique by email.
    email = f"{_ascii(first)}.{_ascii(last)}.{i}@example-{i % 97}.test"
    phone = (
        None
        if rng.random() < 0.15
        else f"+{rng.randint(1, 49)} {rng.randint(100, 999)} {rng.randint(1000000, 9999999)}"
    )
    modified = modstamp_ms(i)
    created = modified - rng.randint(0, 86_400_000 * 30)
    return Person(
        index=i,
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
        title=rng.choice(_TITLES),
        city=city,
        country=country,
        tier=rng.choice(_TIERS),
        lead_score=rng.randint(0, 100),
        company_index=rng.randint(0, 1_000_000),
        created_ms=created,
        modified_ms=modified,
    )


def company(seed: int, i: int) -> Company:
    rng = random.Random(seed * 2_000_003 + i)  # noqa: S311 - deterministic fake data
    word = rng.choice(_COMPANY_WORDS)
    suffix = rng.choice(_COMPANY_SUFFIX)
    city, country = rng.choice(_CITIES)
    name = f"{word} {city} {suffix} #{i}"
    modified = modstamp_ms(i)
    return Company(
        index=i,
        name=name,
        domain=f"{_ascii(word)}{i}.example.test",
        industry=rng.choice(_INDUSTRIES),
        employees=None if rng.random() < 0.1 else rng.randint(1, 50_000),
        annual_revenue=None if rng.random() < 0.2 else round(rng.uniform(1e5, 5e9), 2),
        city=city,
        country=country,
        created_ms=modified - rng.randint(0, 86_400_000 * 365),
        modified_ms=modified,
    )
