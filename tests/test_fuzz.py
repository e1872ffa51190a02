"""Hypothesis against the running daemon: whatever arrives, the answer is a 2xx or a 4xx, never a
5xx; the daemon stays healthy and a normal event sent afterwards still yields its email. The
config loader answers any text with a clear ConfigError, never another exception (a traceback).

CI runs a bounded number of examples per class (FUZZ_EXAMPLES, default 40); bench/fuzz.py runs
the same classes much longer and prints the counts. Strategies: tests/support/fuzzing.py.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings

from streamer.config import ConfigError, parse_config

from support import fuzzing

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with fuzzing.FuzzTarget(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def never_5xx(target, kind: str, request: bytes) -> None:
    status = target.hit(kind, request)
    assert status is not None and status < 500, (status, request[:500])


@FUZZ
@given(fuzzing.webhook_json())
def test_webhook_json_bodies(target, body):
    never_5xx(
        target,
        "webhook: JSON bodies",
        fuzzing.http_request(b"POST", b"/logs/acme", fuzzing._auth(fuzzing.GOOD_AUTH), body),
    )


@FUZZ
@given(fuzzing.webhook_deep())
def test_webhook_deep_nesting_and_huge_numbers(target, body):
    never_5xx(
        target,
        "webhook: depth, numbers",
        fuzzing.http_request(b"POST", b"/logs/acme", fuzzing._auth(fuzzing.GOOD_AUTH), body),
    )


@FUZZ
@given(fuzzing.webhook_mutated())
def test_webhook_mutated_auth0_bodies(target, body):
    never_5xx(
        target,
        "webhook: mutated bodies",
        fuzzing.http_request(b"POST", b"/logs/acme", fuzzing._auth(fuzzing.GOOD_AUTH), body),
    )


@FUZZ
@given(fuzzing.webhook_headers())
def test_webhook_headers_methods_and_paths(target, request_bytes):
    never_5xx(target, "webhook: headers", request_bytes)


@FUZZ
@given(fuzzing.reset_get())
def test_reset_form_pages(target, request_bytes):
    never_5xx(target, "reset form: GET", request_bytes)


def test_reset_form_posts(target):
    @FUZZ
    @given(fuzzing.reset_post_strategy(target.csrf_pair()))
    def post(request_bytes):
        never_5xx(target, "reset form: POST", request_bytes)

    post()


def test_config_loader_gives_a_clear_error_or_a_config(target, tmp_path):
    @FUZZ
    @given(fuzzing.config_texts(target.config_text))
    def load(text):
        try:
            parse_config(text, env={}, base_dir=tmp_path)
        except ConfigError as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)

    load()


def test_after_all_that_the_daemon_is_healthy_and_still_mails(target):
    """Runs last in this module (pytest keeps file order)."""
    assert target.healthy()
    assert target.normal_event_is_mailed()
    assert target.tracebacks() == []
    assert sum(count for (_, outcome), count in target.counts.items() if outcome in ("5xx", "no answer")) == 0
