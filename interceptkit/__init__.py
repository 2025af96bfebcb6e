"""interceptkit: a scriptable, notebook-friendly HTTP(S) interception proxy.

Start a proxy, send traffic through it, and read every exchange::

    from interceptkit import Proxy
    with Proxy(port=0) as proxy:
        ...  # point a client at proxy.url
        proxy.flows[-1].response.status
"""

from .filters import compile_filter
from .flow import Flow, Headers, Request, Response, Timings, TLSInfo
from .proxy import Proxy, ProxyStartError
from .replay import ReplayError
from .scripts import ScriptHandle
from .table import FlowTable
from .transport import ResolveError, static_resolver

__all__ = [
    "Flow", "FlowTable", "Headers", "Proxy", "ProxyStartError", "ReplayError", "Request", "ResolveError",
    "Response", "ScriptHandle", "TLSInfo", "Timings", "compile_filter", "static_resolver",
]
__version__ = "0.1.0"
