"""Due emails for store tests."""

from streamer.outbox import DueEmail

NOW = 1_800_000_000.0


def due(log_id="L1", user="auth0|1", rule="verify", once_key=None, cooldown=None, key=None) -> DueEmail:
    once_key = once_key or f"acme/{rule}/user/{user}"
    return DueEmail(
        tenant="acme",
        rule=rule,
        template="verify_email",
        once_key=once_key,
        cooldown_s=cooldown,
        key=key or once_key,
        user_id=user,
        log_id=log_id,
        recipient="ana@example.com",
        locale="fr",
        accepted_at=NOW,
        context={"user": {"email": "ana@example.com"}, "event": {"log_id": log_id}},
    )
