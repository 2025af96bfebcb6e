"""interceptkit: a scriptable, notebook-friendly HTTP(S) interception proxy.

Start a proxy, send traffic through it, and read every exchange::

    from interceptkit import Proxy
    with Proxy(port=0) as proxy:
        ...  # point a client at proxy.url
        proxy.flows[-1].response.status
"""

from .cassette import Cassette
from .flow import Flow, Headers, Request, Response, Timings, TLSInfo
from .proxy import Proxy, ProxyStartError
from .redact import Redact
from .replay import ReplayError
from .table import FlowTable
from .transport import ResolveError, static_resolver

__all__ = [
    "Cassette", "Flow", "FlowTable", "Headers", "Proxy", "ProxyStartError", "Redact", "ReplayError", "Request",
    "ResolveError", "Response", "TLSInfo", "Timings", "static_resolver",
]
__version__ = "0.1.0"
