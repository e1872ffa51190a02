"""Ingest ceiling for bench/run.py: a bare aiohttp server that reads and json-parses the webhook
body and answers 200 — no auth check, no storage, no rules. Whatever streamer does on top of
this (unwrap, scrub, group-committed fsync, the processor) is what the ratio measures.

    taskset -c 0 python bench/bare_server.py --port 8099     # prints READY <port>
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


async def receive_logs(request: web.Request) -> web.Response:
    document = json.loads(await request.read())
    return web.json_response({"received": len(document) if isinstance(document, list) else 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/logs/{tenant}", receive_logs)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=lambda *_: None)


if __name__ == "__main__":
    main()
