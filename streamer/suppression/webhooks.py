"""Provider webhooks: `POST /webhooks/ses/{tenant}` (Amazon SES via SNS) and
`POST /webhooks/postmark/{tenant}` (Postmark bounce and spam-complaint webhooks).

The tenant is in the path: point each tenant's relay configuration at its own URL. Answers:
200 once stored (or ignored: a delivery notice, an unknown record type); 400 not JSON; 401
Postmark without the configured Basic credentials; 403 an SNS message whose signature or topic
is not right, or older than an hour (a replay: `streamer.suppression.sns.MAX_AGE_S`); 404 unknown
tenant or provider not configured; 413 over 256 KiB; 503 the store failed (both providers retry).
An SNS message already recorded (same MessageId, within that hour) is answered 200 and ignored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from typing import Any

import httpx
from aiohttp import web

from streamer.config import Config
from streamer.logs import get_logger
from streamer.suppression.policy import Report
from streamer.suppression.providers import postmark_reports, ses_reports
from streamer.suppression.recorder import SuppressionRecorder
from streamer.suppression.sns import CertFetcher, RecentMessages, SnsRejected, SnsVerifier, is_sns_url

log = get_logger(__name__)
MAX_BODY_BYTES = 256 * 1024


async def https_get(url: str) -> bytes:
    """GET over HTTPS, no redirects, bounded: for SNS certificates and subscription confirmations."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content[:MAX_BODY_BYTES]


class SuppressionWebhooks:
    def __init__(self, config: Config, recorder: SuppressionRecorder, *, fetch: CertFetcher = https_get):
        self.config = config
        self.settings = config.suppression.webhooks
        self.recorder = recorder
        self.fetch = fetch
        self.sns = SnsVerifier(fetch, allowed_topics=self.settings.ses.topic_arns) if self.settings.ses else None
        self.recent = RecentMessages()

    def routes(self) -> list[web.RouteDef]:
        routes = []
        if self.settings.ses:
            routes.append(web.post("/webhooks/ses/{tenant}", self.ses))
        if self.settings.postmark:
            routes.append(web.post("/webhooks/postmark/{tenant}", self.postmark))
        return routes

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if request.match_info["tenant"] not in self.config.tenants:
            raise web.HTTPNotFound(text="unknown tenant\n")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length or 0)
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
        try:
            data = json.loads(body)
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON\n") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="expected a JSON object\n")
        return data

    async def _record(self, tenant: str, reports: list[Report]) -> web.Response:
        try:
            for report in reports:
                await self.recorder.record(tenant, report)
        except Exception:  # noqa: BLE001 - the provider retries on 5xx
            log.exception("bounce_webhook_store_failed", tenant=tenant)
            return web.Response(status=503, text="try again later\n", headers={"Retry-After": "60"})
        return web.Response(text=f"ok: {len(reports)} report(s)\n")

    async def ses(self, request: web.Request) -> web.Response:
        message = await self._json(request)
        tenant = request.match_info["tenant"]
        assert self.sns is not None
        try:
            await self.sns.verify(message)
        except SnsRejected as exc:
            log.warning("ses_webhook_rejected", tenant=tenant, reason=str(exc))
            return web.Response(status=403, text=f"rejected: {exc}\n")
        except Exception as exc:  # noqa: BLE001 - certificate fetch failed: SNS retries
            log.warning("ses_certificate_fetch_failed", tenant=tenant, error=f"{type(exc).__name__}: {exc}"[:300])
            return web.Response(status=503, text="cannot fetch the signing certificate\n")
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = str(message.get("SubscribeURL", ""))
            if not is_sns_url(url):
                return web.Response(status=403, text="rejected: SubscribeURL is not on an SNS host\n")
            try:
                await self.fetch(url)
            except Exception as exc:  # noqa: BLE001
                log.warning("ses_subscription_confirm_failed", tenant=tenant, error=f"{type(exc).__name__}"[:100])
                return web.Response(status=503, text="cannot confirm the subscription\n")
            log.info("ses_subscription_confirmed", tenant=tenant, topic=message.get("TopicArn"))
            return web.Response(text="subscription confirmed\n")
        if kind != "Notification":
            return web.Response(text="ok\n")
        message_id = f"{tenant}/{message.get('MessageId')}"
        if self.recent.seen(message_id, now=time.time()):
            log.info("ses_webhook_duplicate", tenant=tenant, message_id=str(message.get("MessageId"))[:100])
            return web.Response(text="ignored: already received\n")
        try:
            notification = json.loads(message.get("Message") or "")
        except ValueError:
            log.warning("ses_webhook_not_json", tenant=tenant)
            return web.Response(text="ignored: Message is not JSON\n")
        response = await self._record(tenant, ses_reports(notification) if isinstance(notification, dict) else [])
        if response.status == 200:  # not after a 503: SNS's retry of it must be taken
            self.recent.add(message_id, now=time.time())
        return response

    def _authorized(self, request: web.Request) -> bool:
        settings = self.settings.postmark
        assert settings is not None
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        expected = settings.password.get_secret_value()
        return hmac.compare_digest(username.encode(), settings.username.encode()) & hmac.compare_digest(
            password.encode(), expected.encode()
        )

    async def postmark(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(
                status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="streamer"'}
            )
        payload = await self._json(request)
        return await self._record(request.match_info["tenant"], postmark_reports(payload))
