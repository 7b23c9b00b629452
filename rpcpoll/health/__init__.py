"""Health checking: the standard grpc.health.v1.Health service and its client-side probe.

`HealthService` is the handler (statuses per service, set by the app); `rpcpoll serve`
registers one by default, reachable as `default_health()`, and `rpcpoll health` probes it.
"""

from .health_rpc import HEALTH, HealthCheckRequest, HealthCheckResponse, HealthClient
from .service import SERVER, HealthService, ServingStatus, default_health

__all__ = [
    "HEALTH",
    "SERVER",
    "HealthCheckRequest",
    "HealthCheckResponse",
    "HealthClient",
    "HealthService",
    "ServingStatus",
    "default_health",
]
