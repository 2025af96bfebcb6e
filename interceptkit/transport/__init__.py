from .resolver import ResolveError, Resolver, static_resolver, system_resolver
from .server import Callbacks, ProxyServer, TransportSettings

__all__ = ["Callbacks", "ProxyServer", "ResolveError", "Resolver", "TransportSettings",
           "static_resolver", "system_resolver"]
