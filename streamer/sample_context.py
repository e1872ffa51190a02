"""Realistic template context for previews, `check` and tests: what a real event would give.

Shapes follow Auth0's (see shared/auth0/samples): a log event as found in a log stream, a user
profile as returned by GET /api/v2/users/{id} with user_metadata/app_metadata always present,
the application, the tenant and, for the templates that carry a link, a ticket URL. Names are
local to each language and non-ASCII on purpose, so previews show real accents and tests
exercise encoding. Everything is deterministic.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Templates whose rules create an Auth0 ticket, so `ticket_url` is defined (SPEC).
TICKET_TEMPLATES = {"verify_email": "email-verification", "password_change": "reset-verify"}

_PEOPLE = {
    "en": ("Emma", "Thompson", "emma.thompson"),
    "fr": ("Chloé", "Lefèvre", "chloe.lefevre"),
    "de": ("Jürgen", "Weiß", "juergen.weiss"),
    "es": ("Lucía", "Martínez", "lucia.martinez"),
    "pt": ("João", "Gonçalves", "joao.goncalves"),
    "it": ("Giulia", "Ricci", "giulia.ricci"),
}
_DEFAULT_CLIENT_ID = "Xy7pQ2acmeTESTclient000000000001"
_UA_DESKTOP = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
_UA_MOBILE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/128.0.0.0 Mobile Safari/537.36"
)

#: Event per template: type, description, date, extra fields.
_EVENTS: dict[str, dict[str, Any]] = {
    "verify_email": {
        "type": "ss",
        "description": "",
        "date": "2026-03-01T14:01:07.398Z",
        "details": {"body": {"email_verified": False}},
    },
    "welcome": {
        "type": "sv",
        "description": "",
        "date": "2026-03-01T14:03:12.045Z",
        "details": {"title": "Email Verification"},
    },
    "password_change": {
        "type": "password_reset_requested",
        "description": "Password reset requested",
        "date": "2026-03-09T17:45:03.512Z",
    },
    "password_changed": {
        "type": "scp",
        "description": "Password changed successfully",
        "date": "2026-03-10T08:24:40.118Z",
        "details": {"title": "Change Password"},
    },
    "new_device": {
        "type": "s",
        "description": "Successful login",
        "date": "2026-03-04T21:17:42.031Z",
        "user_agent": _UA_MOBILE,
        "ip": "198.51.100.77",
        "isMobile": True,
        "location_info": {
            "country_code": "CA",
            "country_name": "Canada",
            "city_name": "Montréal",
            "time_zone": "America/Toronto",
        },
        "details": {"riskAssessment": {"assessments": {"NewDevice": {"code": "no_match", "confidence": "low"}}}},
    },
}


def sample_context(
    template_name: str,
    locale: str,
    tenant_name: str = "acme",
    client_id: str | None = None,
    *,
    tenant_vars: Mapping[str, Any] | None = None,
    ticket: bool | None = None,
) -> dict[str, Any]:
    """Context for rendering `template_name` as a user whose profile asks for `locale`.

    `tenant_vars` replaces the sample vars (pass the configured ones); `ticket` forces or
    suppresses `ticket_url` (default: only for the templates whose rules create a ticket).
    """
    language = (locale or "en").split("-")[0].lower()
    given, family, handle = _PEOPLE.get(language, _PEOPLE["en"])
    client_id = client_id or _DEFAULT_CLIENT_ID
    domain = f"{tenant_name}.eu.auth0.com"
    email = f"{handle}@example.com"
    user_id = "auth0|65f0c0ffee0000000000a001"
    app_url = f"https://app.{tenant_name}.test"
    event = {
        "log_id": "90020260304211743068023757000000000000000000000000000003",
        "client_id": client_id,
        "client_name": "Acme Web",
        "ip": "203.0.113.24",
        "user_agent": _UA_DESKTOP,
        "hostname": domain,
        "tenant_name": tenant_name,
        "connection": "Username-Password-Authentication",
        "strategy": "auth0",
        "strategy_type": "database",
        "user_id": user_id,
        "user_name": email,
        "isMobile": False,
    }
    event.update(copy.deepcopy(_EVENTS.get(template_name, {"type": "s", "date": "2026-03-04T21:17:42.031Z"})))
    user = {
        "user_id": user_id,
        "email": email,
        "email_verified": template_name != "verify_email",
        "name": f"{given} {family}",
        "given_name": given,
        "family_name": family,
        "nickname": handle,
        "picture": "https://s.gravatar.com/avatar/00000000000000000000000000000000?s=480&r=pg&d=mp",
        "created_at": "2026-03-01T14:01:07.398Z",
        "updated_at": "2026-03-10T08:24:40.118Z",
        "last_login": "2026-03-04T21:17:42.031Z",
        "logins_count": 4,
        "identities": [
            {
                "connection": "Username-Password-Authentication",
                "provider": "auth0",
                "user_id": user_id.split("|", 1)[1],
                "isSocial": False,
            }
        ],
        "user_metadata": {"locale": locale},
        "app_metadata": {"plan": "free"},
    }
    sample_vars = {
        "app_url": app_url,
        "app_name": tenant_name.capitalize(),
        "support_email": f"support@{tenant_name}.test",
        "password_reset_url": f"{app_url}/forgot-password",
        "company_address": f"{tenant_name.capitalize()} Inc. · 1 Example Street · Springfield",
    }
    context: dict[str, Any] = {
        "event": event,
        "user": user,
        "client": {"id": client_id, "name": "Acme Web"},
        "tenant": {
            "name": tenant_name,
            "domain": domain,
            "vars": dict(tenant_vars) if tenant_vars is not None else sample_vars,
        },
        "locale": locale,
    }
    kind = TICKET_TEMPLATES.get(template_name)
    if ticket or (ticket is None and kind):
        context["ticket_url"] = (
            f"https://{domain}/u/{kind or 'email-verification'}"
            f"?ticket=SAMPLEticket{template_name.replace('_', '')}0001#"
        )
    return context
