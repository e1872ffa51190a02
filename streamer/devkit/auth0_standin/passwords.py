"""A database connection's passwords: stored as digests (never the password), and the password
policy Auth0 applies on `PATCH /api/v2/users/{id}` and its reset form (its "fair" strength, a small dictionary, no
personal info, a history), with Auth0's refusal messages."""

from __future__ import annotations

import hashlib
import re

from streamer.devkit.auth0_standin.state import JSON, Tenant

#: Auth0's password-policy refusals on user create/update (400, no errorCode), by policy.
PASSWORD_POLICY_ERRORS = {
    "strength": "PasswordStrengthError: Password is too weak",
    "dictionary": "PasswordDictionaryError: Password is too common",
    "user_info": "PasswordNoUserInfoError: Password contains user information",
    "history": "PasswordHistoryError: Password has previously been used",
}
COMMON_PASSWORDS = frozenset(
    {
        "password1!",
        "passw0rd!",
        "p@ssw0rd",
        "p@ssword1",
        "welcome1!",
        "qwerty123!",
        "letmein123!",
        "password123!",
        "iloveyou1!",
        "admin123!",
    }
)


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def password_matches(tenant: Tenant, user_id: str, password: str) -> bool:
    return tenant.passwords.get(user_id) == digest(password)


def set_password(tenant: Tenant, user_id: str, password: str) -> None:
    """The new password, the one it replaces kept in the history."""
    previous = tenant.passwords.get(user_id)
    if previous is not None:
        tenant.password_history.setdefault(user_id, []).append(previous)
    tenant.passwords[user_id] = digest(password)


def _too_weak(password: str, min_length: int) -> bool:
    classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    return len(password) < min_length or classes < 3


def _personal(user: JSON, password: str) -> bool:
    lowered = password.lower()
    personal = [
        str(user.get("email") or "").split("@")[0],
        str(user.get("given_name") or ""),
        str(user.get("family_name") or ""),
        str(user.get("nickname") or ""),
    ]
    return any(len(part) >= 3 and part.lower() in lowered for part in personal)


def _used_before(tenant: Tenant, user_id: str, password: str, size: int) -> bool:
    if not size:
        return False
    earlier = [tenant.passwords[user_id]] if user_id in tenant.passwords else []
    earlier += tenant.password_history.get(user_id, [])[-size:]
    return digest(password) in earlier


def policy_refusal(tenant: Tenant, user: JSON, password: str) -> str | None:
    """Auth0's message for a password the connection's policy refuses, else None."""
    policy = tenant.password_policy
    if policy is None:
        return None
    if _too_weak(password, policy.get("min_length", 8)):
        return PASSWORD_POLICY_ERRORS["strength"]
    if password.lower() in COMMON_PASSWORDS:
        return PASSWORD_POLICY_ERRORS["dictionary"]
    if _personal(user, password):
        return PASSWORD_POLICY_ERRORS["user_info"]
    if _used_before(tenant, user["user_id"], password, policy.get("history_size", 0)):
        return PASSWORD_POLICY_ERRORS["history"]
    return None
