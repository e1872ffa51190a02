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
from streamer.config import Config
from streamer.delivery import Deliverer
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
from streamer.rules import compile_rules
from streamer.server import CappedTCPSite, Readiness, build_app, connection_limit
from streamer.smtp import SmtpPool
from streamer.sources.poller import Poller
from streamer.sources.stream_watch import StreamWatch
from streamer.store import Store, open_store
from streamer.store.base import StoreInUse
from streamer.suppression.inbound import InboundHandler, InboundListener
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
    #: The inbound bounce listener's port once started (suppression.inbound).
    inbound_port: int | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)

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
        config = self.config
        rules = compile_rules(config.rules)
        templates = Templates(config.templates_dir, default_locale=config.templates.default_locale)
        self.store = store = self.store or open_store(config.store_url)
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
        apis = {name: ManagementApi(tenant, name=name) for name, tenant in config.tenants.items()}
        smtp = SmtpPool(config.smtp)
        processor_wake, outbox_wake = asyncio.Event(), asyncio.Event()
        # Deletions are kept even when no rule listens: they cancel the user's queued emails.
        inbox = Inbox(store, config.listened_types() | DELETED_TYPES, wake=processor_wake)
        locale_for = make_locale_resolver(templates, config.templates.default_locale, config.tenant_default_locales())
        processor = Processor(config.tenants, store, rules, apis, locale_for,
                              wake=processor_wake, outbox_wake=outbox_wake,
                              ingesting=lambda: inbox.accepting > 0)
        vault = NewPasswordVault()
        new_password = config.password_reset.new_password
        reset_links = ResetLinks(vault, pending_store=store if new_password else None,
                                 public_url=str(config.server.public_url) if config.server.public_url else None)
        return_paths = (ReturnPaths(config.suppression.return_path, config.suppression.secret.get_secret_value()
                                    .encode()) if config.suppression.return_path and config.suppression.secret
                        else None)
        unsubscribe_tokens = (UnsubscribeTokens(config.unsubscribe.secret.get_secret_value().encode())
                              if config.unsubscribe.secret else None)
        deliverer = Deliverer(config, {r.name: r for r in rules}, apis, templates, smtp, reset_link=reset_links,
                              store=store, return_paths=return_paths, unsubscribe_tokens=unsubscribe_tokens)
        policy = RetryPolicy(config.delivery.max_attempts, config.delivery.backoff.initial_s,
                             config.delivery.backoff.max_s)
        dispatcher = Dispatcher(store, deliverer, policy, concurrency=config.delivery.workers, wake=outbox_wake,
                                lease_s=config.delivery.lease_s)
        readiness = Readiness({"store": store.ping, "smtp": smtp.check})
        reset_pages = (PasswordResetPages(ResetPageSettings.of(config), inbox, apis, vault=vault)
                       if config.password_reset.enabled else None)
        reset_routes = reset_pages.routes() if reset_pages else []
        if reset_pages and config.password_reset.new_password:
            reset_routes += ConfirmPages(reset_pages, store, apis).routes()
        recorder = SuppressionRecorder(store, config.suppression)
        extra_routes = [*reset_routes,
                        *SuppressionWebhooks(config, recorder, **({"fetch": self.sns_fetch} if self.sns_fetch
                                                                  else {})).routes(),
                        *(UnsubscribePages(config, store, unsubscribe_tokens).routes() if unsubscribe_tokens else [])]
        inbound = (InboundListener(config.suppression.inbound, InboundHandler(
            store, return_paths, recorder, unsubscribe_tokens=unsubscribe_tokens,
            unsubscribe_address=config.unsubscribe.mailto), hostname=return_paths.domain)
            if config.suppression.inbound and return_paths else None)
        app = build_app(config, inbox, readiness, extra_routes, stopped_tasks=self._stopped_tasks)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = CappedTCPSite(runner, config.server.host, config.server.port, reuse_address=True,
                             max_connections=connection_limit(config.server.max_connections))
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
        checks: list[asyncio.Task] = []
        try:
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {config.server.listen} (server.listen): "
                                   f"{exc.strerror or exc}") from None
            if inbound is not None:
                try:
                    self.inbound_port = await inbound.start()
                except OSError as exc:
                    raise StartupError(f"cannot listen on {config.suppression.inbound.listen} "
                                       f"(suppression.inbound.listen): {exc.strerror or exc}") from None
            sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - real port when 0
            port = sockets[0].getsockname()[1] if sockets else config.server.port
            self.url = f"http://{config.server.host}:{port}"
            pollers = [Poller(name, tenant.poll, apis[name], inbox)
                       for name, tenant in config.tenants.items() if tenant.poll.enabled]
            watches = [StreamWatch(name, apis[name], config.server.public_url, store, config.listened_types())
                       for name, tenant in config.tenants.items() if tenant.webhook_token is not None]
            self._tasks = [asyncio.create_task(processor.run(self.stop), name="processor"),
                           asyncio.create_task(dispatcher.run(self.stop), name="dispatcher"),
                           asyncio.create_task(dispatcher.reclaim(self.stop), name="reclaim"),
                           asyncio.create_task(self._gauges(), name="gauges"),
                           asyncio.create_task(self._purge(), name="purge"),
                           *(asyncio.create_task(p.run(self.stop), name=f"poll:{p.tenant}") for p in pollers)]
            # Checks with nothing to finish: cancelled on SIGTERM, not waited for (a call to Auth0
            # may hang until its timeout).
            checks += [asyncio.create_task(report_access(name, api.tokens, needed_scopes(config, name)),
                                           name=f"auth0-access:{name}") for name, api in apis.items()]
            checks += [asyncio.create_task(w.run(self.stop), name=f"stream-watch:{w.tenant}") for w in watches]
            log.info("streamer_started", listen=self.url, tenants=sorted(config.tenants), rules=len(rules),
                     store=config.store_url.split("@")[-1], pollers=[p.tenant for p in pollers])
            if on_ready:
                on_ready(self.url)
            await self.stop.wait()
            log.info("streamer_stopping")
            for check in checks:
                check.cancel()
            await site.stop()
            if inbound is not None:
                await inbound.stop()
            if reset_pages:
                await reset_pages.drain()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.stop.set()
            for task in [*self._tasks, *checks]:
                task.cancel()
            await asyncio.gather(*self._tasks, *checks, return_exceptions=True)
            await runner.cleanup()
            if inbound is not None:
                await inbound.stop()
            await smtp.close()
            for api in apis.values():
                await api.close()
            await store.close()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("streamer_stopped")
