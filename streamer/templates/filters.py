"""The filters and globals templates can use: dates, countries and places in the email's locale."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from jinja2 import pass_context
from jinja2.runtime import Context

from streamer.colors import button_color
from streamer.templates.text import clean_text, describe_device, greeting_name


def to_datetime(value: Any) -> datetime | None:
    """ISO-8601 strings (Auth0's `2026-03-04T21:17:42.031Z`), datetimes, dates, epoch seconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


@lru_cache(maxsize=256)
def babel_locale(tag: str | None) -> Locale:
    """A Babel Locale for a tag, falling back to its language, then to English."""
    for candidate in (tag, (tag or "").split("-")[0], "en"):
        if candidate:
            try:
                return Locale.parse(candidate, sep="-")
            except (ValueError, UnknownLocaleError):
                continue
    return Locale("en")


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):   # ZoneInfoNotFoundError is a KeyError
        return None


def _context_zone(context: Context, tz: str | None) -> tzinfo:
    """Explicit `tz`, else the user's (user_metadata.timezone, zoneinfo), the tenant's, UTC."""
    user = context.get("user")
    tenant = context.get("tenant")
    metadata = user.get("user_metadata") if isinstance(user, Mapping) else None
    tenant_vars = tenant.get("vars") if isinstance(tenant, Mapping) else None
    for name in (tz,
                 metadata.get("timezone") if isinstance(metadata, Mapping) else None,
                 user.get("zoneinfo") if isinstance(user, Mapping) else None,
                 tenant_vars.get("timezone") if isinstance(tenant_vars, Mapping) else None):
        if isinstance(name, str) and name and len(name) < 64:
            zone = _zone(name)
            if zone:
                return zone
    return timezone.utc


def _local_moment(context: Context, value: Any, tz: str | None) -> datetime | None:
    """`value` as a moment in the zone the email shows times in; None when it is no date."""
    moment = to_datetime(value)
    return None if moment is None else moment.astimezone(_context_zone(context, tz))


def _as_given(value: Any) -> str:
    """What the date filters show for a value that is no date: itself, and nothing for None."""
    return "" if value is None else str(value)


def _zone_label(moment: datetime, locale: Locale) -> str:
    if str(moment.tzinfo) in ("UTC", "Etc/UTC"):
        return "UTC"
    label = babel_dates.format_time(moment, "z", locale=locale)
    return label if label[:1] not in "+-" else babel_dates.format_time(moment, "O", locale=locale)


@pass_context
def format_datetime_filter(context: Context, value: Any, format: str | None = None, tz: str | None = None) -> str:
    """Date and time in the email's locale and the user's zone: `4 mars 2026, 22:17 CET`.

    Without `format`: the long date, the short time and the zone; otherwise a Babel format name
    (short, medium, long, full) or pattern. Unparseable values are shown as given.
    """
    moment = _local_moment(context, value, tz)
    if moment is None:
        return _as_given(value)
    locale = babel_locale(context.get("locale"))
    if format is not None:
        return babel_dates.format_datetime(moment, format, tzinfo=moment.tzinfo, locale=locale)
    day = babel_dates.format_date(moment, "long", locale=locale)
    clock = babel_dates.format_time(moment, "short", tzinfo=moment.tzinfo, locale=locale)
    pattern = babel_dates.get_datetime_format("long", locale=locale).replace("'", "")
    return pattern.replace("{1}", day).replace("{0}", f"{clock} {_zone_label(moment, locale)}")


@pass_context
def format_date_filter(context: Context, value: Any, format: str = "long", tz: str | None = None) -> str:
    """A date in the email's locale: `4 mars 2026` (the day as seen in the user's zone)."""
    moment = _local_moment(context, value, tz)
    if moment is None:
        return _as_given(value)
    return babel_dates.format_date(moment, format, locale=babel_locale(context.get("locale")))


@pass_context
def format_time_filter(context: Context, value: Any, format: str = "short", tz: str | None = None) -> str:
    moment = _local_moment(context, value, tz)
    if moment is None:
        return _as_given(value)
    return babel_dates.format_time(moment, format, tzinfo=moment.tzinfo, locale=babel_locale(context.get("locale")))


@pass_context
def country_name_filter(context: Context, code: Any) -> str:
    """`CA` → `Canada` / `Kanada`, in the email's locale; unknown codes are shown as given."""
    if not isinstance(code, str) or not code.strip():
        return ""
    return babel_locale(context.get("locale")).territories.get(code.strip().upper(), code)


@pass_context
def place_filter(context: Context, location: Any) -> str:
    """An Auth0 `location_info` as `Montréal, Canada`; "" when unknown."""
    if not isinstance(location, Mapping):
        return ""
    city = location.get("city_name")
    country = country_name_filter(context, location.get("country_code")) or location.get("country_name")
    return ", ".join(clean_text(str(part)) for part in (city, country) if part)


@pass_context
def app_name(context: Context) -> str:
    """What to call the product: tenant.vars.app_name, else the application's name, else the tenant's."""
    tenant = context.get("tenant")
    client = context.get("client")
    tenant_vars = tenant.get("vars") if isinstance(tenant, Mapping) else None
    for value in (tenant_vars.get("app_name") if isinstance(tenant_vars, Mapping) else None,
                  client.get("name") if isinstance(client, Mapping) else None,
                  tenant.get("name") if isinstance(tenant, Mapping) else None):
        if isinstance(value, str) and value.strip():
            return clean_text(value)
    return ""


_FR_VOWELS = frozenset("aeiouàâäéèêëîïôöùûüæœAEIOUÀÂÄÉÈÊËÎÏÔÖÙÛÜÆŒ")


def fr_de(name: Any) -> str:
    """French "de" before a name, elided before a vowel sound: "d’Acme", "de Zoom", "de Yahoo"
    ("la page de connexion d’Acme"). An initial h is left alone: whether it elides depends on
    the word, and "de" is never wrong there in a brand name."""
    text = clean_text(str(name)) if name is not None else ""
    first, second = text[:1], text[1:2]
    vowel = first in _FR_VOWELS or (first in "yY" and second != "" and second not in _FR_VOWELS)
    return f"d’{text}" if text and vowel else f"de {text}"


@pass_context
def brand_color(context: Context) -> str:
    """The button colour: tenant.vars.brand_color when it is a hex colour readable under white
    text (streamer.colors), else the default blue."""
    tenant = context.get("tenant")
    tenant_vars = tenant.get("vars") if isinstance(tenant, Mapping) else None
    return button_color(tenant_vars.get("brand_color") if isinstance(tenant_vars, Mapping) else None)


FILTERS: dict[str, Callable[..., Any]] = {
    "format_datetime": format_datetime_filter,
    "format_date": format_date_filter,
    "format_time": format_time_filter,
    "country_name": country_name_filter,
    "place": place_filter,
    "default_name": greeting_name,
    "device": describe_device,
    "fr_de": fr_de,
}
GLOBALS: dict[str, Any] = {"app_name": app_name, "brand_color": brand_color}
