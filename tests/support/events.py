"""Auth0 log-stream shapes for tests."""


def envelope(event: dict) -> dict:
    """An event as a log stream posts it: `{log_id, data}`."""
    return {"log_id": event["log_id"], "data": event}
