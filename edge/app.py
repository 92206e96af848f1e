"""The aiohttp application of an edge: the page, health, metrics and HTTP API,
and the lifecycle of the edge's parts and its broker sockets. WebSocket upgrades never
reach it: `edge.server` serves them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from chatconfig import BrokerLink, EdgeSettings
from edge import api, guard
from edge.bus import Bus, LibzmqBus
from edge.liveness import TICK
from edge.metrics import EdgeCollector
from edge.node import Edge
from edge.zmtpbus import ZmtpBus, speaks_for

log = logging.getLogger("edge")

SETTINGS = web.AppKey("settings", EdgeSettings)
EDGE = web.AppKey("edge", Edge)
GATE = web.AppKey("gate", guard.Gate)
METRICS = web.AppKey("metrics", CollectorRegistry)


def create_app(settings: EdgeSettings) -> web.Application:
    # Token checks run before any route (docs/security.md); WebSocket upgrades
    # are checked by the same Gate in edge.server.
    gate = guard.Gate(settings.security)
    app = web.Application(middlewares=[guard.middleware(gate)])
    app[SETTINGS] = settings
    app[GATE] = gate
    app.cleanup_ctx.append(_edge_lifecycle)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket_only)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    api.add_routes(app, settings.api, settings.listen, settings.limits.max_message_chars, EDGE)
    return app


def open_bus(link: BrokerLink) -> Bus:
    """ZMTP spoken on the event loop where it can speak for the link, libzmq otherwise."""
    return ZmtpBus(link) if speaks_for(link) else LibzmqBus(link)


async def _every(seconds: float, job: object) -> None:
    assert callable(job)
    while True:
        await asyncio.sleep(seconds)
        try:
            job()
        except Exception:  # a bug in one sweep must not stop the next
            log.exception("periodic job failed")


async def _edge_lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    bus = open_bus(settings.broker)
    edge = Edge(settings, bus, app[GATE])
    app[EDGE] = edge
    registry = CollectorRegistry()
    registry.register(EdgeCollector(edge.stats, edge.gauges, edge.counters, edge.shard_gauges))
    app[METRICS] = registry
    tasks = [
        asyncio.create_task(bus.run(edge.fanout.on_batch), name="bus"),
        asyncio.create_task(bus.watch(edge.path.disconnected), name="bus-watch"),
        asyncio.create_task(_every(TICK, edge.tick), name="tick"),
        asyncio.create_task(
            _every(settings.liveness.heartbeat, edge.clients.heartbeat), name="heartbeat"
        ),
    ]
    edge.tick()
    log.info("edge %s up on %s:%d", edge.instance_id, settings.listen.host, settings.listen.port)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        bus.close()


async def index(request: web.Request) -> web.StreamResponse:
    return await api.page(request)


async def websocket_only(request: web.Request) -> web.StreamResponse:
    # WebSocket upgrades never reach aiohttp (edge.server takes them first).
    return web.Response(status=426, text="WebSocket endpoint: connect with ws://\n",
                        headers={"Upgrade": "websocket", "Connection": "Upgrade"})


async def healthz(request: web.Request) -> web.Response:
    body = request.app[EDGE].health()
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS])
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
