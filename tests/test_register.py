"""`streamer register` creates, then updates (never duplicates) the tenant's log stream; the
stream then delivers to the daemon like Auth0 does."""

import asyncio

from streamer.auth0.log_streams import missing_categories, stream_filters
from streamer.cli import main

from conftest import WEBHOOK_TOKEN, config_text


def test_filters_cover_only_the_categories_rules_use():
    assert stream_filters({"ss", "s", "sv", "password_reset_requested"}) == [
        {"type": "category", "name": "auth.login.success"},
        {"type": "category", "name": "auth.signup.success"},
        {"type": "category", "name": "user.success"},
    ]
    assert stream_filters({"ss", "some_future_type"}) is None  # unknown: receive everything


async def test_register_is_idempotent(tmp_path, standin, catcher, capsys):
    path = tmp_path / "streamer.yaml"
    path.write_text(config_text(tmp_path, standin, catcher))
    args = ["register", "-c", str(path), "--tenant", "acme", "--url", "https://mail.acme.test/"]
    assert await asyncio.to_thread(main, args) == 0
    assert "created log stream" in capsys.readouterr().out
    assert await asyncio.to_thread(main, args) == 0
    assert "updated log stream" in capsys.readouterr().out
    [stream] = standin.log_streams.values()
    assert stream["sink"]["httpEndpoint"] == "https://mail.acme.test/logs/acme"
    assert stream["sink"]["httpAuthorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert stream["sink"]["httpContentFormat"] == "JSONARRAY" and stream["status"] == "active"
    assert {f["name"] for f in stream["filters"]} == {"auth.signup.success", "auth.login.success", "user.success"}
    assert await asyncio.to_thread(main, [*args[:-1], "http://plain.test"]) == 1  # Auth0 requires https
    assert "https" in capsys.readouterr().err


def test_missing_categories_are_those_rules_need_and_filters_leave_out():
    stream = {
        "filters": [{"type": "category", "name": "auth.login.success"}, {"type": "category", "name": "user.success"}]
    }
    assert missing_categories(stream, {"s", "sv", "scp"}) == []
    assert missing_categories(stream, {"s", "ss", "fp"}) == ["auth.login.fail", "auth.signup.success"]
    assert missing_categories(stream, {"password_reset_requested", "s"}) == []  # made by streamer itself
    assert missing_categories({"filters": []}, {"ss"}) == []  # everything is sent
    assert missing_categories({}, {"ss"}) == []
