"""The RPC client runtime: the network Channel behind generated clients, and its pool."""

from .channel import NO_RETRY, ClientChannel, RetryPolicy, open_channel
from .pool import Pool, PoolOptions

__all__ = ["NO_RETRY", "ClientChannel", "Pool", "PoolOptions", "RetryPolicy", "open_channel"]
