"""The store interface: inbox, `once` ledger, outbox and poll checkpoints behind one small API.

SQLite (embedded default) and PostgreSQL (several replicas) implement it; the rest of streamer
only sees this. Times are UNIX epoch seconds (float). Every write that matters is one transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from streamer.logs import get_logger
from streamer.outbox import DueEmail, EmailState, OutboxEmail
from streamer.suppression.policy import Reason, Suppression

log = get_logger(__name__)


def recipients_by_tenant(emails: list[OutboxEmail]) -> dict[str, list[str]]:
    """The recipients of claimed emails, by tenant: one suppression lookup per tenant."""
    by_tenant: dict[str, list[str]] = {}
    for email in emails:
        by_tenant.setdefault(email.tenant, []).append(email.recipient)
    return by_tenant


def users_by_tenant(emails: list[OutboxEmail], rules: frozenset[str]) -> dict[str, list[str]]:
    """The users of claimed emails whose rule is in `rules` (those with an unsubscribe link), by
    tenant: one unsubscribe lookup per tenant, none when no rule offers one."""
    by_tenant: dict[str, list[str]] = {}
    for email in emails:
        if email.rule in rules:
            by_tenant.setdefault(email.tenant, []).append(email.user_id)
    return by_tenant


@dataclass(frozen=True)
class RecipientChecks:
    """What a tenant's store says about the recipients of claimed emails, read with the claim: the
    dispatcher must not send to a suppressed address, nor a rule's email to a user who unsubscribed
    from it after it was queued."""

    #: Lower-cased address → its entry, for the addresses on the tenant's suppression list.
    suppressions: dict[str, Suppression]
    #: user_id → the rules they unsubscribed from (only users who did, of the rules asked about).
    unsubscribed: dict[str, set[str]]


@dataclass(frozen=True)
class InboxEvent:
    tenant: str
    log_id: str
    type: str
    user_id: str | None
    event: dict[str, Any]
    received_at: float
    attempts: int


@dataclass(frozen=True)
class IngestResult:
    new: int
    duplicate: int


@dataclass(frozen=True)
class PendingPassword:
    """A new password waiting for its owner's click (`password_reset.new_password`).

    `sealed` is the password encrypted with a key that only the emailed link carries
    (streamer.password_reset.sealed); it is None once the row is used, replaced or expired.
    `state`: pending | used | replaced (expiry is `expires_at`, read against the clock).
    """

    id: str
    tenant: str
    user_id: str
    connection: str
    state: str
    sealed: bytes | None
    created_at: float
    expires_at: float
    updated_at: float

    def __repr__(self) -> str:
        return (
            f"PendingPassword(id={self.id!r}, tenant={self.tenant!r}, user_id={self.user_id!r}, "
            f"state={self.state!r}, expires_at={self.expires_at})"
        )


class StoreInUse(RuntimeError):
    """Another process runs the pipeline on a store that allows only one (SQLite)."""


class Store(ABC):
    """Durable state of one streamer deployment."""

    url: str
    #: Only one process may run the pipeline on it (`open(exclusive=True)`): at start, whatever the
    #: previous one had claimed is this one's to resume (`resume_after_restart`).
    single_process: bool = False

    @abstractmethod
    async def open(self, *, exclusive: bool = False) -> None:
        """Connect and create or migrate the schema. `exclusive`: this process runs the pipeline
        (`streamer run`); a single-process store then takes its lock until `close()`, and raises
        StoreInUse if another process holds it. Commands that only read or edit a few rows
        (`streamer outbox`) open it without."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot be reached (readiness)."""

    async def try_lead(self, name: str) -> bool:
        """Whether this process leads `name` (e.g. the poller of a tenant) right now.
        Call it before each round. A single-process store always leads."""
        return True

    async def release_lead(self, name: str) -> None:
        """Give up the lead on `name`, if held."""
        return None

    # --- inbox ------------------------------------------------------------------------------
    @abstractmethod
    async def add_events(
        self,
        tenant: str,
        events: list[dict[str, Any]],
        *,
        now: float,
        checkpoint: str | None = None,
        raw: bytes | None = None,
    ) -> IngestResult:
        """Store events (dedup by (tenant, log_id)) and, for pollers, the checkpoint, in one
        committed transaction. Returns only after the commit. `raw`, when given, is a body that
        parse_body() turns into exactly `events` and that holds no credential: a store may keep
        those bytes instead of encoding the events again."""

    @abstractmethod
    async def get_checkpoint(self, tenant: str) -> str | None: ...

    @abstractmethod
    async def claim_events(self, *, limit: int, now: float, lease_s: float) -> list[InboxEvent]:
        """Pending events due now, oldest first; hidden from other claimers for `lease_s`."""

    @abstractmethod
    async def settle_events(self, keys: list[tuple[str, str]], emails: list[DueEmail], *, now: float) -> list[DueEmail]:
        """Mark events done and queue their due emails, in one transaction. An email whose
        `once_key` has already fired (or is within its cooldown) is skipped; returns the queued."""

    @abstractmethod
    async def defer_events(self, keys: list[tuple[str, str]], *, until: float, error: str) -> None:
        """Leave events pending, to be tried again at `until` (e.g. Auth0 unavailable)."""

    # --- outbox -----------------------------------------------------------------------------
    @abstractmethod
    async def claim_emails(self, *, limit: int, now: float, lease_s: float) -> list[OutboxEmail]:
        """Due emails, by next attempt time, set to `sending` and counted as an attempt."""

    async def claim_emails_checked(
        self, *, limit: int, now: float, lease_s: float, unsubscribable: frozenset[str] = frozenset()
    ) -> tuple[list[OutboxEmail], dict[str, RecipientChecks | None]]:
        """`claim_emails`, and the checks of the claimed recipients by tenant: suppression entries,
        and unsubscribes from the rules in `unsubscribable` (None: that tenant's lookup failed, its
        emails must not be sent now). What the dispatcher needs before it sends; a store may get it
        all in one round trip (SQLite: one hop to its thread)."""
        emails = await self.claim_emails(limit=limit, now=now, lease_s=lease_s)
        users = users_by_tenant(emails, unsubscribable)
        found: dict[str, RecipientChecks | None] = {}
        for tenant, recipients in recipients_by_tenant(emails).items():
            try:
                found[tenant] = RecipientChecks(
                    await self.get_suppressions(tenant, recipients),
                    await self.get_unsubscribed(tenant, users[tenant]) if tenant in users else {},
                )
            except Exception:  # noqa: BLE001 - unknown: the caller holds these back (the lease brings them back)
                log.exception("suppression_lookup_failed", tenant=tenant, emails=len(recipients))
                found[tenant] = None
        return emails, found

    async def resume_after_restart(self, *, now: float) -> int:
        """Single-process stores only: the previous process is gone, so every claim it held
        (events being evaluated, emails being sent) is due again now. Returns rows released."""
        raise NotImplementedError("only a single-process store can release every claim at start")

    async def reclaim_dead(self, *, now: float) -> int:
        """Several-replica stores: keep this replica known alive, and hand the claims of replicas
        known dead back to the survivors (call it every few seconds). Returns rows released.
        A single-process store has no one else's claims (a restart releases its own)."""
        return 0

    async def release_orphaned_emails(self, *, keep: set[int], now: float) -> int:
        """Emails claimed by this store but not being sent (ids outside `keep`) go back to queued:
        after a claim whose answer was lost with the connection, the claimer never saw them.
        Call it only when no claim is under way. A store whose claims cannot be lost: no-op."""
        return 0

    async def release_orphaned_events(self, *, now: float) -> int:
        """Events claimed by this store are due again now (same reason; call it with none in hand)."""
        return 0

    @abstractmethod
    async def requeue_stale(self, *, now: float) -> int:
        """Emails stuck in `sending` past their lease (a crashed sender) go back to `queued`."""

    # The state changes below move an email only from the states `streamer.outbox.TRANSITIONS`
    # allows for them (retry/cancel return False when it is in another one).
    @abstractmethod
    async def mark_sent(self, email_id: int, *, now: float) -> None: ...

    @abstractmethod
    async def mark_failed(self, email_id: int, *, error: str, next_attempt_at: float, now: float) -> None: ...

    @abstractmethod
    async def mark_dead(self, email_id: int, *, error: str, now: float) -> None: ...

    @abstractmethod
    async def list_emails(
        self,
        *,
        states: tuple[EmailState, ...] | None,
        tenant: str | None = None,
        rule: str | None = None,
        user_id: str | None = None,
        recipient: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEmail]:
        """Newest first; `recipient` ignores case (support looks up whatever the user typed)."""

    @abstractmethod
    async def list_users_emails(
        self, *, states: tuple[EmailState, ...], tenant: str, user_ids: list[str], limit: int = 100
    ) -> dict[str, list[OutboxEmail]]:
        """list_emails for several users of one tenant, in one read (the processor asks after
        every batch of events): each user's newest `limit`, newest first; users with none left out."""

    @abstractmethod
    async def get_email(self, email_id: int) -> OutboxEmail | None: ...

    @abstractmethod
    async def retry_email(self, email_id: int, *, now: float) -> bool:
        """RETRY (failed/dead/cancelled/suppressed) → queued, due now, attempts reset. False if not in such a state."""

    @abstractmethod
    async def cancel_email(self, email_id: int, *, now: float) -> bool:
        """CANCEL (queued/failed) → cancelled. False if not in such a state."""

    @abstractmethod
    async def stats(self, *, now: float) -> dict[str, Any]:
        """{"outbox": {state: count}, "oldest_open_age_s": float, "inbox_pending": int}; the outbox
        counts cover COUNTED_STATES (not `sent`: it only grows, and the gauges run every few seconds)."""

    # --- pending passwords (password_reset.new_password) --------------------------------------
    @abstractmethod
    async def save_pending_password(self, pending: PendingPassword, *, now: float) -> int:
        """Store a new pending password and, in the same transaction, mark every older pending
        one of the same (tenant, user) `replaced` with its ciphertext wiped: only the newest
        link works. Returns how many were replaced."""

    @abstractmethod
    async def get_pending_password(self, pending_id: str) -> PendingPassword | None: ...

    @abstractmethod
    async def use_pending_password(self, pending_id: str, *, now: float) -> bool:
        """pending and unexpired → used, ciphertext wiped; atomic, so a link works once.
        False if it was not in that state (used, replaced, expired or unknown)."""

    @abstractmethod
    async def restore_pending_password(self, pending_id: str, sealed: bytes, *, now: float) -> bool:
        """Undo `use_pending_password` after Auth0 failed transiently (the link works again),
        unless a newer request of the same user has come in meanwhile."""

    @abstractmethod
    async def purge_pending_passwords(self, *, now: float, before: float) -> int:
        """Wipe the ciphertext of expired rows; delete rows that expired before `before`."""

    @abstractmethod
    async def purge(self, *, before: float) -> int:
        """Delete processed events and sent/cancelled/dead emails older than `before`.
        The `once` ledger is kept: a purged email must not be sent again."""

    # --- suppression list, return paths and unsubscribes (kept through the outbox's retention) ----
    # Addresses are compared in lower case (callers may pass any case).

    @abstractmethod
    async def mark_suppressed(self, email_id: int, *, error: str, now: float) -> None:
        """The recipient is on the suppression list; nothing was sent."""

    @abstractmethod
    async def mark_unsubscribed(self, email_id: int, *, error: str, now: float) -> None:
        """Cancelled at send time: the user unsubscribed from the rule after it was queued."""

    @abstractmethod
    async def suppress(
        self, tenant: str, address: str, *, reason: Reason, source: str, detail: str, now: float
    ) -> bool:
        """Put the address on the tenant's list (or update its reason). True if it was not on it."""

    @abstractmethod
    async def record_soft_bounce(
        self, tenant: str, address: str, *, source: str, detail: str, now: float, window_s: float, threshold: int
    ) -> bool:
        """Count one soft bounce; once `threshold` fall within `window_s`, suppress the address, in the
        same transaction. True if this bounce put it on the list."""

    @abstractmethod
    async def unsuppress(self, tenant: str, address: str) -> bool:
        """Take the address off the list (and forget its soft bounces). False if it was not on it."""

    @abstractmethod
    async def get_suppressions(self, tenant: str, addresses: list[str]) -> dict[str, Suppression]:
        """Lower-cased address → its entry, for those of `addresses` on the tenant's list."""

    @abstractmethod
    async def list_suppressions(
        self, *, tenant: str | None = None, address: str | None = None, limit: int = 100
    ) -> list[Suppression]:
        """Newest first."""

    @abstractmethod
    async def remember_return_path(self, token: str, tenant: str, address: str, *, now: float) -> None:
        """Record which (tenant, address) a VERP token stands for (idempotent)."""

    @abstractmethod
    async def find_return_path(self, token: str) -> tuple[str, str] | None: ...

    @abstractmethod
    async def set_unsubscribed(self, tenant: str, user_id: str, rule: str, *, now: float) -> bool:
        """The user wants no more of the rule's emails. True if this is new."""

    @abstractmethod
    async def get_unsubscribed(self, tenant: str, user_ids: list[str]) -> dict[str, set[str]]:
        """user_id → the rules they unsubscribed from (only users with at least one)."""
