"""Health and metrics over plain HTTP on the WebSocket port.

* ``GET /healthz``: liveness. 200 while the process answers; never needs the token
  (an orchestrator restarts the pod when it fails).
* ``GET /readyz``: readiness, a JSON object (model, provider, streams, capacity
  left, whether the server is shedding load); 200 when a new stream would be
  admitted, else 503, so a load balancer stops sending streams to a full or
  overloaded server while its streams carry on.
* ``GET /metrics``: the Prometheus text format (see :mod:`.metrics`).

``/readyz`` and ``/metrics`` need the token when one is set.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from websockets.http11 import Response

if TYPE_CHECKING:
    from .context import ServerContext

HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"
HEALTH_PATHS = (HEALTHZ, READYZ, METRICS)
#: Paths served without the token.
PUBLIC_PATHS = (HEALTHZ,)


def readiness(ctx: ServerContext) -> tuple[bool, dict[str, Any]]:
    """Whether a new stream would be admitted now, and the state behind it."""
    slots = ctx.slots
    total = slots.total()
    refusal = ctx.load.refusal(slots.own(), total)
    slots.set_shedding(refusal is not None)
    capacity_left = max(slots.max_streams - total, 0)
    # With several workers, the pod is ready while any of them admits streams.
    ready = capacity_left > 0 and slots.any_worker_admitting()
    return ready, {
        "ready": ready,
        "model": ctx.model,
        "provider": ctx.provider,
        "active_streams": total,
        "max_streams": slots.max_streams,
        "capacity_left": capacity_left,
        # The figures below are the answering worker's: with several, which
        # one answers changes from request to request.
        "worker": slots.index,
        "worker_streams": slots.own(),
        "measured_capacity_streams": ctx.load.capacity_streams(),
        "capacity_scope": "device" if ctx.load.shared_device else "worker",
        "host_capacity_streams": ctx.load.host_capacity_streams(),
        "score_lag_s": round(ctx.load.recent_lag_s(), 4),
        "shedding": refusal,
    }


async def respond(ctx: ServerContext, connection: Any, path: str) -> Response:
    """The response for one of ``HEALTH_PATHS`` (auth already checked); never
    cached (a proxy or browser must not answer a probe with an old state)."""
    if path == HEALTHZ:
        response = connection.respond(HTTPStatus.OK, "ok\n")
    elif path == READYZ:
        ready, body = readiness(ctx)
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        response = connection.respond(status, json.dumps(body) + "\n")
        _content_type(response, "application/json")
    else:
        # Multi-process aggregation reads every worker's files: off the event loop.
        page = await anyio.to_thread.run_sync(ctx.metrics.exposition)
        response = connection.respond(HTTPStatus.OK, page.decode())
        _content_type(response, CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response  # type: ignore[no-any-return]


def _content_type(response: Response, value: str) -> None:
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = value
