"""`streamer run`: wires store, sources, processor and dispatcher together and runs them.

Shutdown order on SIGTERM/SIGINT: stop the HTTP listener (Auth0 retries what it could not
deliver), stop pollers and the processor, let in-flight sends finish, close connections, exit 0.
"""

from __future__ import annotations  # noqa: I001

import asyncio
import contextlib
import signal
import time
from typing import Any
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from streamer import metrics
from streamer.auth0 import ManagementApi
from streamer.auth0.freshness import DELETED_TYPES
from streamer.auth0.scopes import needed_scopes, report_access
from streamer.auth0.token import SCOPE_RECHECK_S
from streamer.config import Config
from streamer.delivery import Deliverer, DeliverySettings
from streamer.dispatcher import Dispatcher
from streamer.inbox import Inbox
from streamer.lifecycle import sleep_unless_stopped
from streamer.locale import make_locale_resolver
from streamer.logs import get_logger, redact_text
from streamer.outbox import RetryPolicy
from streamer.password_reset import NewPasswordVault, PasswordResetPages, ResetPageSettings
from streamer.password_reset.confirm_pages import ConfirmPages
from streamer.password_reset.links import ResetLinks
from streamer.processor import Processor
from streamer.rules import CompiledRule, compile_rules
from streamer.server import CappedTCPSite, Readiness, build_app, connection_limit
from streamer.smtp import SmtpPool
from streamer.sources.poller import Poller
from streamer.sources.stream_watch import StreamWatch
from streamer.store import Store, open_store
from streamer.store.base import StoreInUse
from streamer.suppression.inbound import InboundHandler, InboundListener
from streamer.suppression.inbound_tls import inbound_tls_context
from streamer.suppression.recorder import SuppressionRecorder
from streamer.suppression.verp import ReturnPaths
from streamer.suppression.webhooks import SuppressionWebhooks
from streamer.templates import Templates
from streamer.unsubscribe import UnsubscribeTokens
from streamer.unsubscribe.pages import UnsubscribePages

log = get_logger(__name__)

GAUGE_EVERY_S = 5.0
PURGE_EVERY_S = 3600.0


class StartupError(Exception):
    """The daemon cannot start (store unreachable, port taken …): one clear line, exit 1."""


@dataclass
class Daemon:
    config: Config
    store: Store | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    url: str | None = None
    #: Fetches SNS signing certificates and subscription URLs (tests pass a local one).
    sns_fetch: Any = None
    #: After a 403, a token at least this old is fetched again (tests shorten it).
    scope_recheck_s: float = SCOPE_RECHECK_S
    #: The inbound bounce listener's port once started (suppression.inbound).
    inbound_port: int | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: Checks with nothing to finish (scopes, the log stream): cancelled on stop, not awaited.
    _checks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def _gauges(self) -> None:
        assert self.store is not None
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                stats = await self.store.stats(now=time.time())
                for state, count in stats["outbox"].items():
                    metrics.OUTBOX_DEPTH.labels(state).set(count)
                metrics.OUTBOX_OLDEST_AGE.set(stats["oldest_open_age_s"])
                metrics.INBOX_PENDING.set(stats["inbox_pending"])
            await sleep_unless_stopped(self.stop, GAUGE_EVERY_S)

    def _stopped_tasks(self) -> list[str]:
        """Background tasks that ended although the daemon is not stopping: it is broken (/healthz)."""
        return [] if self.stop.is_set() else [task.get_name() for task in self._tasks if task.done()]

    async def _purge(self) -> None:
        assert self.store is not None
        while not self.stop.is_set():
            before = time.time() - self.config.delivery.retention_days * 86400
            try:
                purged = await self.store.purge(before=before)
                purged += await self.store.purge_pending_passwords(now=time.time(), before=before)
                if purged:
                    log.info("store_purged", rows=purged, retention_days=self.config.delivery.retention_days)
            except Exception:  # noqa: BLE001
                log.exception("store_purge_failed")
            await sleep_unless_stopped(self.stop, PURGE_EVERY_S)

    async def run(self, *, install_signals: bool = True, on_ready: Callable[[str], None] | None = None) -> None:
        """Open the store, wire the parts, serve until SIGTERM/SIGINT (or `stop`), then shut down in order."""
        rules = compile_rules(self.config.rules)
        templates = Templates(self.config.templates_dir, default_locale=self.config.templates.default_locale)
        store = await self._open_store()
        parts = await self._wire(store, rules, templates)
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
        try:
            url = await self._listen(parts)
            self._start_workers(parts)
            if on_ready:
                on_ready(url)
            await self.stop.wait()
            await self._drain(parts)
        finally:
            await self._shut_down(parts)
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("streamer_stopped")

    async def _open_store(self) -> Store:
        """The store, open for this process alone where it must be (SQLite), the last one's claims resumed."""
        self.store = store = self.store or open_store(self.config.store_url)
        try:
            await store.open(exclusive=True)
        except StoreInUse as exc:
            raise StartupError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - reported as one line, not a traceback
            raise StartupError(f"cannot open the store: {redact_text(str(exc))}") from None
        if store.single_process:  # whatever the previous process had claimed is ours to resume now
            released = await store.resume_after_restart(now=time.time())
            if released:
                log.warning("resumed_after_restart", rows=released)
        return store

    async def _wire(self, store: Store, rules: list[CompiledRule], templates: Templates) -> _Parts:
        """Every part built and connected (sources → inbox → processor → outbox → dispatcher), none started."""
        config = self.config
        apis = {
            name: ManagementApi(tenant, name=name, scope_recheck_s=self.scope_recheck_s)
            for name, tenant in config.tenants.items()
        }
        smtp = SmtpPool(config.smtp)
        processor_wake, outbox_wake = asyncio.Event(), asyncio.Event()
        # Deletions are kept even when no rule listens: they cancel the user's queued emails.
        inbox = Inbox(store, config.listened_types() | DELETED_TYPES, wake=processor_wake)
        locale_for = make_locale_resolver(templates, config.templates.default_locale, config.tenant_default_locales())
        processor = Processor(
            config.tenants,
            store,
            rules,
            apis,
            locale_for,
            wake=processor_wake,
            outbox_wake=outbox_wake,
            ingesting=lambda: inbox.accepting > 0,
        )
        links = _Links.of(config, store)
        deliverer = Deliverer(
            DeliverySettings.of(config),
            {r.name: r for r in rules},
            apis,
            templates,
            smtp,
            reset_link=links.reset,
            store=store,
            return_paths=links.return_paths,
            unsubscribe_tokens=links.unsubscribe,
        )
        policy = RetryPolicy(
            config.delivery.max_attempts, config.delivery.backoff.initial_s, config.delivery.backoff.max_s
        )
        dispatcher = Dispatcher(
            store,
            deliverer,
            policy,
            concurrency=config.delivery.workers,
            wake=outbox_wake,
            lease_s=config.delivery.lease_s,
            unsubscribable=frozenset(rule.name for rule in rules if rule.config.unsubscribe),
        )
        recorder = SuppressionRecorder(store, config.suppression)
        reset_pages, routes = self._pages(store, inbox, apis, recorder, links)
        inbound = (
            InboundListener(
                config.suppression.inbound,
                InboundHandler(
                    store,
                    links.return_paths,
                    recorder,
                    unsubscribe_tokens=links.unsubscribe,
                    unsubscribe_address=config.unsubscribe.mailto,
                ),
                hostname=links.return_paths.domain,
                tls_context=inbound_tls_context(config.suppression.inbound, config.base_dir),
            )
            if config.suppression.inbound and links.return_paths
            else None
        )
        app = build_app(
            config,
            inbox,
            Readiness({"store": store.ping, "smtp": smtp.check}),
            routes,
            stopped_tasks=self._stopped_tasks,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = CappedTCPSite(
            runner,
            config.server.host,
            config.server.port,
            reuse_address=True,
            max_connections=connection_limit(config.server.max_connections),
        )
        return _Parts(store, rules, apis, smtp, inbox, processor, dispatcher, reset_pages, inbound, runner, site)

    def _pages(
        self, store: Store, inbox: Inbox, apis: dict[str, ManagementApi], recorder: SuppressionRecorder, links: _Links
    ) -> tuple[PasswordResetPages | None, list[web.RouteDef]]:
        """The web pages and webhooks besides /logs: the hosted reset form, bounces, unsubscribes."""
        config = self.config
        reset_pages = (
            PasswordResetPages(ResetPageSettings.of(config), inbox, apis, vault=links.vault)
            if config.password_reset.enabled
            else None
        )
        routes = reset_pages.routes() if reset_pages else []
        if reset_pages and config.password_reset.new_password:
            routes += ConfirmPages(reset_pages, store, apis).routes()
        routes += SuppressionWebhooks(
            config, recorder, **({"fetch": self.sns_fetch} if self.sns_fetch else {})
        ).routes()
        if links.unsubscribe:
            routes += UnsubscribePages(config, store, links.unsubscribe).routes()
        return reset_pages, routes

    async def _listen(self, parts: _Parts) -> str:
        """Open the HTTP port, and the inbound bounce listener's: a port taken is one clear line."""
        config = self.config
        try:
            await parts.site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {config.server.listen} (server.listen): {exc.strerror or exc}"
            ) from None
        if parts.inbound is not None:
            try:
                self.inbound_port = await parts.inbound.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {parts.inbound.config.listen} "
                    f"(suppression.inbound.listen): {exc.strerror or exc}"
                ) from None
        sockets = getattr(parts.site._server, "sockets", None) or []  # noqa: SLF001 - real port when 0
        port = sockets[0].getsockname()[1] if sockets else config.server.port
        self.url = f"http://{config.server.host}:{port}"
        return self.url

    def _start_workers(self, parts: _Parts) -> None:
        """The loops that do the work (drained on SIGTERM) and the checks (cancelled on SIGTERM)."""
        config, apis = self.config, parts.apis
        pollers = [
            Poller(name, tenant.poll, apis[name], parts.inbox)
            for name, tenant in config.tenants.items()
            if tenant.poll.enabled
        ]
        watches = [
            StreamWatch(name, apis[name], config.server.public_url, parts.store, config.listened_types())
            for name, tenant in config.tenants.items()
            if tenant.webhook_token is not None
        ]
        self._tasks = [
            asyncio.create_task(parts.processor.run(self.stop), name="processor"),
            asyncio.create_task(parts.dispatcher.run(self.stop), name="dispatcher"),
            asyncio.create_task(parts.dispatcher.reclaim(self.stop), name="reclaim"),
            asyncio.create_task(self._gauges(), name="gauges"),
            asyncio.create_task(self._purge(), name="purge"),
            *(asyncio.create_task(p.run(self.stop), name=f"poll:{p.tenant}") for p in pollers),
        ]
        # Checks with nothing to finish: cancelled on SIGTERM, not waited for (a call to Auth0
        # may hang until its timeout).
        self._checks = [
            asyncio.create_task(
                report_access(name, api.tokens, needed_scopes(config, name)), name=f"auth0-access:{name}"
            )
            for name, api in apis.items()
        ]
        self._checks += [asyncio.create_task(w.run(self.stop), name=f"stream-watch:{w.tenant}") for w in watches]
        log.info(
            "streamer_started",
            listen=self.url,
            tenants=sorted(config.tenants),
            rules=len(parts.rules),
            store=config.store_url.split("@")[-1],
            pollers=[p.tenant for p in pollers],
        )

    async def _drain(self, parts: _Parts) -> None:
        """SIGTERM: stop taking work (HTTP first: Auth0 retries), then let the loops finish what they hold."""
        log.info("streamer_stopping")
        for check in self._checks:
            check.cancel()
        await parts.site.stop()
        if parts.inbound is not None:
            await parts.inbound.stop()
        if parts.reset_pages:
            await parts.reset_pages.drain()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _shut_down(self, parts: _Parts) -> None:
        """Whatever happened: cancel what still runs, close every connection, release the store."""
        self.stop.set()
        running = [*self._tasks, *self._checks]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await parts.runner.cleanup()
        if parts.inbound is not None:
            await parts.inbound.stop()
        await parts.smtp.close()
        for api in parts.apis.values():
            await api.close()
        await parts.store.close()


@dataclass(frozen=True)
class _Links:
    """What emails link to and the pages and the bounce listener verify: password-reset links (and
    the typed passwords they confirm), VERP return paths, unsubscribe tokens."""

    vault: NewPasswordVault
    reset: ResetLinks
    return_paths: ReturnPaths | None
    unsubscribe: UnsubscribeTokens | None

    @classmethod
    def of(cls, config: Config, store: Store) -> _Links:
        vault = NewPasswordVault()
        suppression, public_url = config.suppression, config.server.public_url
        return cls(
            vault=vault,
            reset=ResetLinks(
                vault,
                pending_store=store if config.password_reset.new_password else None,
                public_url=str(public_url) if public_url else None,
            ),
            return_paths=(
                ReturnPaths(suppression.return_path, suppression.secret.get_secret_value().encode())
                if suppression.return_path and suppression.secret
                else None
            ),
            unsubscribe=(
                UnsubscribeTokens(config.unsubscribe.secret.get_secret_value().encode())
                if config.unsubscribe.secret
                else None
            ),
        )


@dataclass(frozen=True)
class _Parts:
    """The wired daemon, handed from step to step of `Daemon.run`."""

    store: Store
    rules: list[CompiledRule]
    apis: dict[str, ManagementApi]
    smtp: SmtpPool
    inbox: Inbox
    processor: Processor
    dispatcher: Dispatcher
    reset_pages: PasswordResetPages | None
    inbound: InboundListener | None
    runner: web.AppRunner
    site: CappedTCPSite
