"""Messages from templates. One file per template and language,
templates/<language>/<name>.txt, in string.Template syntax ($terminal, $held …); the values
are formatted for the rider: amounts as Rp 12.000, clock times in their time zone, an
effective day as "besok" / "hari ini" / a date, and a visit or room booking on its place's
own clock with the date and zone ("9 Desember 2026 pukul 09:00 WIB"). Pure; the files are
read once at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from string import Template
from zoneinfo import ZoneInfo

from libs.money import rupiah
from services.notification.domain import LANGUAGES, NotificationType

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Day:
    """An instant shown as the day it falls on, relative to today when close."""

    at: datetime


@dataclass(frozen=True)
class Local:
    """An appointment at a place: its date and clock time (a range when `end` is set) on the
    place's wall clock `zone`, named with the zone's abbreviation so a rider elsewhere is
    not misled; in the rider's zone when the place's is unknown."""

    start: datetime
    zone: ZoneInfo | None
    end: datetime | None = None


Value = str | Decimal | datetime | Day | Local


@dataclass(frozen=True)
class Words:
    """What a language needs beside its templates."""

    today: str
    tomorrow: str
    at: str  # a clock time after a date
    months: str  # January … December, separated by spaces
    subject: str
    kinds: dict[NotificationType, str]


T = NotificationType
WORDS = {
    "id": Words(
        today="hari ini",
        tomorrow="besok",
        at="pukul",
        months=(
            "Januari Februari Maret April Mei Juni Juli Agustus September Oktober November Desember"
        ),
        subject="Notifikasi tiket",
        kinds={
            T.CHECKIN: "Check-in",
            T.CHECKOUT: "Perjalanan selesai",
            T.ABANDONED: "Perjalanan ditutup otomatis",
            T.INCOMPLETE: "Check-out tanpa check-in",
            T.FARE_UPDATE: "Perubahan tarif",
            T.WALLET: "Saldo",
            T.BOOKING: "Pemesanan",
        },
    ),
    "en": Words(
        today="today",
        tomorrow="tomorrow",
        at="at",
        months=(
            "January February March April May June July August September October November December"
        ),
        subject="tiket notification",
        kinds={
            T.CHECKIN: "Check-in",
            T.CHECKOUT: "Trip completed",
            T.ABANDONED: "Trip closed automatically",
            T.INCOMPLETE: "Check-out without check-in",
            T.FARE_UPDATE: "Fare change",
            T.WALLET: "Balance",
            T.BOOKING: "Booking",
        },
    ),
}


def _load() -> dict[tuple[str, str], Template]:
    found: dict[tuple[str, str], Template] = {}
    for language in LANGUAGES:
        for path in sorted((TEMPLATES / language).glob("*.txt")):
            found[(language, path.name.removesuffix(".txt"))] = Template(path.read_text().strip())
    return found


_TEMPLATES = _load()


def names(language: str) -> set[str]:
    """The templates a language has."""
    return {name for lang, name in _TEMPLATES if lang == language}


def fits(name: str, values: Mapping[str, Value]) -> bool:
    """Whether every language has the template `name` and `values` hold all it needs."""
    return all(
        (language, name) in _TEMPLATES
        and set(_TEMPLATES[(language, name)].get_identifiers()) <= values.keys()
        for language in LANGUAGES
    )


def render(
    name: str, language: str, values: Mapping[str, Value], zone: ZoneInfo, now: datetime
) -> str:
    """The template `name` in `language` filled with `values` formatted for a rider in
    `zone` at `now`. KeyError names a value the template needs and did not get."""
    formatted = {key: format_value(value, language, zone, now) for key, value in values.items()}
    return _TEMPLATES[(language, name)].substitute(formatted)


def subject(language: str, kind: NotificationType) -> str:
    words = WORDS[language]
    return f"{words.subject}: {words.kinds[kind]}"


def format_value(value: Value, language: str, zone: ZoneInfo, now: datetime) -> str:
    if isinstance(value, Decimal):
        return rupiah(value)
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%H:%M")
    if isinstance(value, Day):
        return day_phrase(value.at.astimezone(zone).date(), now.astimezone(zone).date(), language)
    if isinstance(value, Local):
        return local_phrase(value, language, zone)
    return value


def day_phrase(day: date, today: date, language: str) -> str:
    """ "hari ini", "besok", else "17 Desember 2024" (and the English of each)."""
    words = WORDS[language]
    if day == today:
        return words.today
    if (day - today).days == 1:
        return words.tomorrow
    return date_words(day, language)


def local_phrase(value: Local, language: str, rider_zone: ZoneInfo) -> str:
    """ "9 Desember 2026 pukul 09:00 WIB", a range "… pukul 09:00–10:00 WIB", or one over
    midnight "9 Desember 2026 pukul 22:00 – 10 Desember 2026 pukul 02:00 WIB"."""
    zone = value.zone or rider_zone
    start = value.start.astimezone(zone)
    words = WORDS[language]

    def when(at: datetime) -> str:
        return f"{date_words(at.date(), language)} {words.at} {at:%H:%M}"

    if value.end is None:
        return f"{when(start)} {start:%Z}"
    end = value.end.astimezone(zone)
    if end.date() == start.date():
        return f"{when(start)}–{end:%H:%M} {end:%Z}"
    return f"{when(start)} – {when(end)} {end:%Z}"


def date_words(day: date, language: str) -> str:
    return f"{day.day} {WORDS[language].months.split()[day.month - 1]} {day.year}"


def stored(values: Mapping[str, Value]) -> dict[str, str]:
    """The values as kept in a notification's metadata: plain, zone-independent strings."""

    def plain(value: Value) -> str:
        if isinstance(value, Day):
            return value.at.isoformat()
        if isinstance(value, Local):  # on the place's clock; a range as ISO 8601 start/end
            ends = (t for t in (value.start, value.end) if t is not None)
            return "/".join(
                (t.astimezone(value.zone) if value.zone else t).isoformat() for t in ends
            )
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    return {key: plain(value) for key, value in values.items()}
