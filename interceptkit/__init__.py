"""interceptkit: a scriptable, notebook-friendly HTTP(S) interception proxy.

Start a proxy, send traffic through it, and read every exchange::

    from interceptkit import Proxy
    with Proxy(port=0) as proxy:
        ...  # point a client at proxy.url
        proxy.flows[-1].response.status
"""

from .breakpoints import Breakpoint
from .cassette import Cassette
from .core.proxyauth import Credentials
from .filters import compile_filter
from .flow import Flow, FlowOwner, Headers, ReplayError, Request, Response, Timings, TLSInfo
from .live import LiveView
from .proxy import Proxy, ProxyStartError
from .redact import Redact
from .scripts import ScriptHandle
from .table import FlowTable
from .transport import ResolveError, static_resolver

__all__ = [
    "Breakpoint", "Cassette", "Credentials", "Flow", "FlowOwner", "FlowTable", "Headers", "LiveView", "Proxy", "ProxyStartError",
    "Redact", "ReplayError", "Request", "ResolveError", "Response", "ScriptHandle", "TLSInfo", "Timings",
    "compile_filter", "static_resolver",
]
__version__ = "0.1.0"
