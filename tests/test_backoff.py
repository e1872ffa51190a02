"""One backoff formula serves every retry; each user keeps the waits it had."""

import random

import pytest

from streamer.backoff import Backoff
from streamer.config import PollConfig
from streamer.outbox import RetryPolicy
from streamer.processor import USER_FETCH_BACKOFF
from streamer.sources.poller import Poller


def test_doubles_from_initial_up_to_max():
    backoff = Backoff(initial_s=2.0, max_s=30.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay(0) == 2.0 and backoff.delay(10**6) == 30.0  # no overflow, never below initial


def test_jitter_stays_within_half_and_whole_of_the_wait():
    rng = random.Random(7)
    draws = [Backoff(4.0, 100.0, jitter=True).delay(3, rng) for _ in range(500)]
    assert all(8.0 <= d <= 16.0 for d in draws) and max(draws) - min(draws) > 4.0


def test_user_fetch_waits_2_4_8_up_to_5_minutes():
    assert [USER_FETCH_BACKOFF.delay(max(1, a)) for a in (0, 1, 2, 3, 8, 9, 50)] == [2, 2, 4, 8, 256, 300, 300]


@pytest.mark.parametrize("interval", [1.0, 10.0])
def test_poller_waits_twice_the_interval_doubling_to_64_times_at_most_5_minutes(interval):
    poller = Poller("acme", PollConfig(enabled=True, interval_s=interval), api=None, inbox=None)
    expected = [min(300.0, interval * 2 ** min(f, 6)) for f in range(1, 12)]
    assert [poller.backoff.delay(f) for f in range(1, 12)] == expected


def test_outbox_retries_with_jitter_and_gives_up_after_max_attempts():
    policy = RetryPolicy(max_attempts=4, initial_s=10.0, max_s=60.0)
    rng = random.Random(1)
    assert 5.0 <= policy.next_delay(1, rng) <= 10.0 and 30.0 <= policy.next_delay(3, rng) <= 60.0
    assert policy.next_delay(4) is None
