"""The RPC client runtime: the network Channel behind generated clients, its connection pools
(long and multiplexed), load balancers and circuit breakers."""

from .balance import Balancer, ConsistentHash, Picker, WeightedRandom, WeightedRoundRobin
from .breaker import NO_BREAKER, BreakerState, CircuitBreaker, InstanceBreaker
from .channel import DEFAULT_MUX_CONNECTIONS, NO_RETRY, ClientChannel, RetryPolicy, open_channel
from .pool import Pool, PoolOptions

__all__ = [
    "DEFAULT_MUX_CONNECTIONS",
    "NO_BREAKER",
    "NO_RETRY",
    "Balancer",
    "BreakerState",
    "CircuitBreaker",
    "ClientChannel",
    "ConsistentHash",
    "InstanceBreaker",
    "Picker",
    "Pool",
    "PoolOptions",
    "RetryPolicy",
    "WeightedRandom",
    "WeightedRoundRobin",
    "open_channel",
]
