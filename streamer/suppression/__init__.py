"""Bounces and complaints into a per-tenant suppression list (issue 13): return path (VERP),
inbound DSN/ARF listener, provider webhooks (Amazon SES via SNS, Postmark)."""
