"""The Serve application: an ingress (the HTTP gateway's routes) in front of the voice
replicas. Deploy it with

    serve run voxpipe.daemon.cluster.app:build daemon.engine=null replicas=3

or from a Serve config file whose `import_path` is `voxpipe.daemon.cluster.app:build`
and whose `args` are the fields of `FleetArgs` (deploy/voxpipe-rayservice.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxpipe.daemon.cluster.fleet import ROUTINGS, FleetGateway
from voxpipe.daemon.cluster.node_daemon import DaemonSettings
from voxpipe.daemon.cluster.affinity import DEFAULT_AFFINITY_SLACK
from voxpipe.daemon.cluster.router import VoiceAffinityRouter
from voxpipe.daemon.cluster.replica import DEFAULT_VOICES_PER_REPLICA, VoiceReplica
from voxpipe.stages.http.app import build_app
from voxpipe.stages.http.gateway import Limits

REPLICA_DEPLOYMENT = "VoiceReplica"
INGRESS_DEPLOYMENT = "FleetIngress"


class FleetArgsError(ValueError):
    """The application's arguments are not usable; the message names the field."""


@dataclass
class FleetArgs:
    """The application's arguments (Serve config `args`, or `key=value` on `serve run`)."""

    daemon: dict[str, Any] = field(default_factory=dict)  # DaemonSettings fields
    replicas: int = 1  # fixed replica count when `autoscaling` is empty
    autoscaling: dict[str, Any] = field(default_factory=dict)  # Serve autoscaling_config for the replicas
    replica_resources: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1})  # ray_actor_options
    max_ongoing_requests: int = 16  # per replica: what Serve's router and autoscaler count
    voices_per_replica: int = DEFAULT_VOICES_PER_REPLICA
    routing: str = "voice"  # "voice" (affinity weighed against load) or "random" (for comparison)
    affinity_slack: int = DEFAULT_AFFINITY_SLACK  # in-flight requests past the least-loaded before affinity yields
    routing_stats_period_s: float = 1.0  # how often Serve collects each replica's state for the ingress
    max_attempts: int = 8  # tries per request before it fails (a resume is another try)
    http: dict[str, Any] = field(default_factory=dict)  # Limits fields for the gateway

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "FleetArgs":
        raw = _nest(raw)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FleetArgsError(f"unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        args = cls(**{k: _coerce(cls.__dataclass_fields__[k].default, v) for k, v in raw.items()})
        args.check()
        return args

    def check(self) -> None:
        DaemonSettings.from_dict(self.daemon)
        if self.routing not in ROUTINGS:
            raise FleetArgsError(f"routing: {self.routing!r} is not one of {', '.join(ROUTINGS)}")
        for name in ("replicas", "max_ongoing_requests", "voices_per_replica", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise FleetArgsError(f"{name}: {value!r} must be a positive integer")
        if not isinstance(self.affinity_slack, int) or self.affinity_slack < 0:
            raise FleetArgsError(f"affinity_slack: {self.affinity_slack!r} must be an integer >= 0")
        if not isinstance(self.routing_stats_period_s, (int, float)) or not self.routing_stats_period_s > 0:
            raise FleetArgsError(f"routing_stats_period_s: {self.routing_stats_period_s!r} must be > 0")
        unknown = set(self.http) - {f.name for f in fields(Limits)}
        if unknown:
            raise FleetArgsError(f"http: unknown limit(s) {', '.join(sorted(unknown))}")
        if self.autoscaling:
            lo, hi = self.autoscaling.get("min_replicas", 1), self.autoscaling.get("max_replicas", 1)
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
                raise FleetArgsError(f"autoscaling: need 0 <= min_replicas <= max_replicas, max_replicas >= 1 "
                                     f"(got {lo!r}, {hi!r})")


def _nest(raw: dict[str, Any]) -> dict[str, Any]:
    """`serve run ... daemon.engine=null` passes flat dotted keys: nest them."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        head, dot, rest = str(key).partition(".")
        if dot:
            out.setdefault(head, {})
            if not isinstance(out[head], dict):
                raise FleetArgsError(f"{head}: both a value and {key!r} given")
            out[head].update(_nest({rest: value}))
        else:
            out[key] = value
    return out


def _coerce(default: Any, value: Any) -> Any:
    """Command-line values arrive as strings: turn them into the field's type."""
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        kind = type(default)
        try:
            return kind(value)
        except ValueError:
            raise FleetArgsError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    return value


@serve.ingress()
class FleetIngress:
    """The HTTP gateway's routes (OpenAI /v1/audio/speech, GPT-SoVITS /tts, /health),
    answered by the fleet; GET /ready and GET /fleet/stats tell of the whole fleet."""

    async def __init__(self, replicas: DeploymentHandle, routing: str = "voice", max_attempts: int = 8,
                       http: dict[str, Any] | None = None) -> None:
        self.gateway = FleetGateway(replicas, Limits(**(http or {})), routing=routing, max_attempts=max_attempts)

    def __serve_build_asgi_app__(self) -> Starlette:
        app = build_app(self.gateway)
        app.router.routes.insert(0, Route("/fleet/stats", self._fleet_stats, methods=["GET"]))
        app.router.routes.insert(0, Route("/ready", self._ready, methods=["GET", "HEAD"]))
        return app

    async def _fleet_stats(self, request: Request) -> Response:
        return JSONResponse(self.gateway.stats())

    async def _ready(self, request: Request) -> Response:
        body = await self.gateway.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)


def build_from(args: FleetArgs) -> Any:
    """The bound application for `serve.run` (used by `build` and by the tools)."""
    options: dict[str, Any] = {"name": REPLICA_DEPLOYMENT, "max_ongoing_requests": args.max_ongoing_requests,
                               "ray_actor_options": dict(args.replica_resources),
                               "health_check_period_s": 2.0, "health_check_timeout_s": 10.0,
                               "graceful_shutdown_timeout_s": 10.0,
                               "request_router_config": RequestRouterConfig(
                                   request_router_class=VoiceAffinityRouter,
                                   request_router_kwargs={"affinity_slack": args.affinity_slack},
                                   request_routing_stats_period_s=args.routing_stats_period_s)}
    if args.autoscaling:
        options["autoscaling_config"] = dict(args.autoscaling)
    else:
        options["num_replicas"] = args.replicas
    replicas = serve.deployment(VoiceReplica, **options).bind(args.daemon, args.voices_per_replica)
    ingress = serve.deployment(FleetIngress, name=INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=1024)
    return ingress.bind(replicas, args.routing, args.max_attempts, args.http)


def build(raw_args: dict[str, Any]) -> Any:
    """The application builder Serve calls with the config's `args`."""
    return build_from(FleetArgs.parse(raw_args))
