"""/metrics says how far the pipeline has got: events evaluated by the rules (and when last), and
when the SMTP server last accepted an email. bench/ reads its figures from these, not the store."""

import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from conftest import config_text, sample_event
from support.events import envelope
from support.waiting import wait_until

TENANT = {"tenant": "acme"}


async def scrape(daemon) -> dict[str, dict[frozenset, float]]:
    """GET /metrics, parsed: sample name → {labels: value}."""
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum over the series of `name` carrying `labels` (0 when there is none yet)."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= key)


async def test_metrics_export_the_evaluated_events_and_the_last_send(tmp_path, standin, catcher, start_daemon):
    daemon = await start_daemon(config_text(tmp_path, standin, catcher))
    before = await scrape(daemon)  # the registry is the process's: other tests' counts are in it
    posted_at = time.time()
    status, answer = await daemon.post([envelope(sample_event("ss"))])
    assert status == 200 and answer["stored"] == 1
    [message] = await catcher.wait_for(1)

    def grew(samples, name: str) -> float:
        return value(samples, name, **TENANT) - value(before, name, **TENANT)

    after = await wait_until(
        lambda: _when(scrape(daemon), lambda s: grew(s, "streamer_emails_sent_total") == 1), what="the send counted"
    )
    assert grew(after, "streamer_events_received_total") == 1
    assert grew(after, "streamer_events_evaluated_total") == 1  # received − evaluated: no backlog left
    evaluated_at = value(after, "streamer_events_last_evaluated_timestamp_seconds", **TENANT)
    sent_at = value(after, "streamer_emails_last_sent_timestamp_seconds", **TENANT)
    # The rules ran after the POST and before the email existed; the send is recorded once the
    # SMTP server has the message.
    assert posted_at <= evaluated_at <= message.received_at.timestamp() <= sent_at <= time.time()


async def _when(scraping, condition):
    samples = await scraping
    return samples if condition(samples) else None
