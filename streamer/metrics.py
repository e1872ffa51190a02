"""Prometheus metrics: one registry per process, names fixed here so every module agrees."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.events import KNOWN_EVENT_TYPES

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "streamer_events_received",
    "Log events accepted into the inbox (new, not duplicates).",
    ["tenant", "source"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "streamer_events_duplicate",
    "Log events already in the inbox (redelivered or replayed).",
    ["tenant"],
    registry=REGISTRY,
)
EVENTS_IGNORED = Counter(
    "streamer_events_ignored",
    "Log events dropped because no rule listens to their type.",
    ["tenant", "type"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "streamer_events_rejected",
    "Entries or requests refused: bad JSON, not a log event, auth …",
    ["tenant", "reason"],
    registry=REGISTRY,
)
AUTO_EMAIL_WARNINGS = Counter(
    "streamer_auth0_automatic_email_events",
    "svr events: Auth0 still sends its own verification emails for this tenant.",
    ["tenant"],
    registry=REGISTRY,
)
EMAILS_QUEUED = Counter("streamer_emails_queued", "Emails put in the outbox.", ["tenant", "rule"], registry=REGISTRY)
EMAILS_SENT = Counter(
    "streamer_emails_sent", "Emails accepted by the SMTP server.", ["tenant", "rule"], registry=REGISTRY
)
EMAILS_FAILED = Counter(
    "streamer_emails_failed", "Send attempts that failed and will be retried.", ["tenant", "rule"], registry=REGISTRY
)
EMAILS_DEAD = Counter(
    "streamer_emails_dead",
    "Emails given up on (permanent error or max_attempts).",
    ["tenant", "rule"],
    registry=REGISTRY,
)
EMAILS_DROPPED = Counter(
    "streamer_emails_dropped",
    "Due emails dropped before queueing, by reason (user not found …).",
    ["tenant", "rule", "reason"],
    registry=REGISTRY,
)
PASSWORD_CONFIRMATIONS = Counter(
    "streamer_password_confirmations",
    "Presses of the confirmation link's button (password_reset.new_password), "
    "by outcome: changed, policy (Auth0 refused the password), expired/used/replaced/unknown, deferred (Auth0 "
    "unavailable or refusing streamer's scopes: the link still works), failed.",
    ["tenant", "outcome"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "streamer_outbox_depth",
    "Emails in the outbox by state (sent ones: streamer_emails_sent_total).",
    ["state"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "streamer_outbox_oldest_age_seconds", "Age of the oldest email not yet sent or dead.", registry=REGISTRY
)
INBOX_PENDING = Gauge("streamer_inbox_pending", "Stored events not yet evaluated by the rules.", registry=REGISTRY)
EVENTS_EVALUATED = Counter(
    "streamer_events_evaluated",
    "Stored events the rules have evaluated (quarantined ones included): received minus "
    "evaluated is the backlog, exact where streamer_inbox_pending is refreshed every 5 s.",
    ["tenant"],
    registry=REGISTRY,
)
EVENTS_LAST_EVALUATED = Gauge(
    "streamer_events_last_evaluated_timestamp_seconds",
    "When the rules last finished evaluating a batch of stored events (Unix time).",
    ["tenant"],
    registry=REGISTRY,
)
EMAILS_LAST_SENT = Gauge(
    "streamer_emails_last_sent_timestamp_seconds",
    "When the SMTP server last accepted an email (Unix time).",
    ["tenant"],
    registry=REGISTRY,
)
AUTH0_CALLS = Counter(
    "streamer_auth0_calls",
    "Management API requests by endpoint and HTTP status.",
    ["tenant", "endpoint", "status"],
    registry=REGISTRY,
)
AUTH0_RATE_LIMITED = Counter(
    "streamer_auth0_rate_limited", "Management API answers with 429.", ["tenant"], registry=REGISTRY
)
AUTH0_PACING_SECONDS = Counter(
    "streamer_auth0_pacing_wait_seconds", "Time spent waiting for the Auth0 rate limit.", ["tenant"], registry=REGISTRY
)
POLL_LAST_SUCCESS = Gauge(
    "streamer_poll_last_success_timestamp_seconds",
    "When the tenant's GET /api/v2/logs poller last read a page (Unix time).",
    ["tenant"],
    registry=REGISTRY,
)
LOG_STREAM_ACTIVE = Gauge(
    "streamer_log_stream_active",
    "1 while the tenant's Auth0 log stream to this daemon is active, 0 paused or suspended.",
    ["tenant"],
    registry=REGISTRY,
)
LOG_STREAM_REACTIVATIONS = Counter(
    "streamer_log_stream_reactivations",
    "Times streamer made a log stream Auth0 had suspended active again.",
    ["tenant"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "streamer_delivery_latency_seconds",
    "From event accepted to SMTP 250.",
    ["tenant", "rule"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
SMTP_SEND_SECONDS = Histogram(
    "streamer_smtp_send_seconds",
    "Time of one SMTP transaction.",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)
OUTCOMES_UNRECORDED = Gauge(
    "streamer_outbox_outcomes_unrecorded",
    "Send outcomes (sent, failed, dead) kept in memory until the store is back.",
    registry=REGISTRY,
)
REPLICA_CLAIMS_RECLAIMED = Counter(
    "streamer_replica_claims_reclaimed",
    "Claims (emails, events) taken back from replicas known dead (PostgreSQL).",
    registry=REGISTRY,
)

# --- bounces, complaints, suppression list, unsubscribes (issue 13) --------------------------------
SUPPRESSIONS_ADDED = Counter(
    "streamer_suppressions_added",
    "Addresses put on a tenant's suppression list, by reason "
    "(hard_bounce, soft_bounce, complaint, manual) and source (dsn, arf, ses, postmark).",
    ["tenant", "reason", "source"],
    registry=REGISTRY,
)
BOUNCE_REPORTS = Counter(
    "streamer_bounce_reports",
    "Bounce and complaint reports received, by source and kind "
    "(hard, soft, complaint; ignored: not a report, or for no address streamer sent to).",
    ["source", "kind"],
    registry=REGISTRY,
)
EMAILS_SUPPRESSED = Counter(
    "streamer_emails_suppressed",
    "Emails not sent because the recipient is on the suppression list (outbox state suppressed).",
    ["tenant", "rule"],
    registry=REGISTRY,
)
UNSUBSCRIBES = Counter(
    "streamer_unsubscribes",
    "Users who unsubscribed from a rule's emails (one-click or page).",
    ["tenant", "rule"],
    registry=REGISTRY,
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "streamer_http_connections_refused",
    "Connections closed at once because server.max_connections were open.",
    registry=REGISTRY,
)
HTTP_READ_TIMEOUTS = Counter(
    "streamer_http_read_timeouts",
    "Requests whose body did not arrive within server.body_timeout_s (answered 408).",
    registry=REGISTRY,
)


def event_type_label(kind: str) -> str:
    """The `type` label of an event type: Auth0's codes as they are, anything else "other" (each
    label value is a series kept for the life of the process)."""
    return kind if kind in KNOWN_EVENT_TYPES else "other"
