"""The sans-IO core: events in, commands out. No sockets, no clock, no asyncio."""

from .commands import (
    CloseClient,
    CloseUpstream,
    Command,
    FlowFinished,
    FlowStarted,
    Log,
    OpenUpstream,
    PauseClient,
    PauseUpstream,
    ResumeClient,
    ResumeUpstream,
    RunHook,
    SendToClient,
    SendToUpstream,
    StartTimer,
)
from .config import ProxyConfig
from .connection import ProxyConnection
from .errors import ProxyError, RemoteProtocolError
from .events import (
    ClientBackpressure,
    ClientConnected,
    ClientDataReceived,
    ConnectionClosed,
    Event,
    HookReturned,
    TimerFired,
    UpstreamConnected,
    UpstreamConnectFailed,
    UpstreamDataReceived,
)
from .state import Phase

__all__ = [
    "ClientBackpressure", "ClientConnected", "ClientDataReceived", "CloseClient", "CloseUpstream", "Command",
    "ConnectionClosed", "Event", "FlowFinished", "FlowStarted", "HookReturned",
    "Log", "OpenUpstream", "PauseClient", "PauseUpstream", "Phase", "ProxyConfig",
    "ProxyConnection", "ProxyError", "RemoteProtocolError", "ResumeClient", "ResumeUpstream", "RunHook",
    "SendToClient", "SendToUpstream", "StartTimer", "TimerFired", "UpstreamConnectFailed",
    "UpstreamConnected", "UpstreamDataReceived",
]
