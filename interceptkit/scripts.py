"""Hook scripts: a plain Python file whose hook-named functions are attached to a proxy.

``proxy.load_script("hooks.py")`` (CLI: ``--script hooks.py``) runs the file as
a fresh module and attaches

- every module-level function named like a hook (``request``, ``response``,
  ``websocket_message``, ... see ``hooks.HOOK_NAMES``) or in the handler style
  (``on_request_received``, ...);
- every object in a module-level ``addons`` list, as :meth:`Proxy.add` does;
- whatever its optional ``setup(proxy)`` attaches through the proxy's API
  (``proxy.on``, ``proxy.mock``, ``proxy.block``, ``proxy.add``).

With ``reload=True`` a watcher thread polls the file's mtime and size; a change
swaps the old version for the new one within a second. A new version that
fails to import or whose ``setup`` raises is reported (logged with its
traceback, kept on ``handle.error``) and the old version stays attached, so a
typo never leaves the proxy without its hooks.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .hooks import HANDLER_ALIASES, HookHandle
from .vocab import HOOK_NAMES

log = logging.getLogger("interceptkit")

#: How often the watcher looks at the file (a change shows within a second).
POLL_INTERVAL = 0.2

_module_ids = itertools.count(1)


class _Recorder:
    """What ``setup(proxy)`` receives: the proxy, with every attachment remembered.

    Everything else goes straight to the proxy, so setup can use the whole
    API; only what it attaches is recorded, to be detached with its version.
    """

    _proxy: Any
    _version: _Version

    def __init__(self, proxy: Any, version: _Version) -> None:
        object.__setattr__(self, "_proxy", proxy)
        object.__setattr__(self, "_version", version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._proxy, name, value)

    def on(self, name: str, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        if fn is None:
            return lambda function: self.on(name, function, **kwargs)
        return self._version.keep(self._proxy.on(name, fn, **kwargs))

    def mock(self, *args: Any, **kwargs: Any) -> HookHandle:
        return self._version.keep(self._proxy.mock(*args, **kwargs))

    def block(self, *args: Any, **kwargs: Any) -> HookHandle:
        return self._version.keep(self._proxy.block(*args, **kwargs))

    def add(self, handler: object) -> HookHandle:
        handle: HookHandle = self._proxy.add(handler)
        self._version.handlers.append(handler)
        return handle


class _Version:
    """One loaded version of a script: its module and everything it attached."""

    def __init__(self, proxy: Any, module: types.ModuleType) -> None:
        self.proxy = proxy
        self.module = module
        self.handles: list[HookHandle] = []
        self.handlers: list[object] = []

    def keep(self, handle: HookHandle) -> HookHandle:
        self.handles.append(handle)
        return handle

    def attach(self, previous: _Version | None) -> None:
        """Attach the module's hooks, addons and setup; on any error detach them again.

        A handler object the previous version attached too (one kept in an
        imported module, say) is taken over rather than attached twice, and
        given back if this version fails.
        """
        inherited: list[object] = []
        try:
            for name, fn in _module_hooks(self.module):
                self.keep(self.proxy.on(name, fn))
            for handler in getattr(self.module, "addons", None) or ():
                if previous is not None and previous.release(handler):
                    inherited.append(handler)
                else:
                    self.proxy.add(handler)
                self.handlers.append(handler)
            setup = getattr(self.module, "setup", None)
            if callable(setup):
                setup(_Recorder(self.proxy, self))
        except BaseException:
            self.handlers = [h for h in self.handlers if not any(h is i for i in inherited)]
            if previous is not None:
                previous.handlers += inherited
            self.detach()
            raise

    def release(self, handler: object) -> bool:
        """Stop owning ``handler`` (still attached) if this version owns it."""
        kept = [h for h in self.handlers if h is not handler]
        released = len(kept) != len(self.handlers)
        self.handlers = kept
        return released

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        for handler in self.handlers:
            self.proxy.remove(handler)
        self.handles, self.handlers = [], []


def _module_hooks(module: types.ModuleType) -> list[tuple[str, Callable[..., Any]]]:
    """Module-level functions named like hooks (``request``) or handlers (``on_request_received``)."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for attribute, value in vars(module).items():
        name = HANDLER_ALIASES.get(attribute, attribute if attribute in HOOK_NAMES else None)
        if name is not None and isinstance(value, types.FunctionType):
            found.append((name, value))
    return found


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # between an editor's delete and its rename: look again later
    return stat.st_mtime_ns, stat.st_size


class ScriptHandle:
    """A script attached to a proxy. ``remove()`` detaches it (and stops watching).

    ``error`` is the traceback of the last version that failed (None once a
    version loads); ``version`` counts the versions attached so far.
    """

    def __init__(self, proxy: Any, path: Path) -> None:
        self.proxy = proxy
        self.path = path
        self.error: str | None = None
        self.version = 0
        self._module_name = f"interceptkit_script_{next(_module_ids)}_{_identifier(path.stem)}"
        self._current: _Version | None = None
        self._signature = _signature(path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def load(self) -> bool:
        """Load the file now; True when the new version is attached (else ``error`` says why)."""
        with self._lock:
            if self._stop.is_set():
                return False
            self._signature = _signature(self.path)
            try:
                version = _Version(self.proxy, self._execute())
                version.attach(self._current)
            except Exception:
                self.error = traceback.format_exc()
                log.error("script %s failed; %s\n%s", self.path,
                          "the previous version stays attached" if self._current else "nothing attached",
                          self.error)
                return False
            old, self._current = self._current, version
            if old is not None:
                old.detach()
            self.error = None
            self.version += 1
            return True

    def _execute(self) -> types.ModuleType:
        source = self.path.read_bytes()
        code = compile(source, str(self.path), "exec")
        module = types.ModuleType(self._module_name)
        module.__file__ = str(self.path)
        # Registered while it runs: dataclasses and pickling look modules up by name.
        previous = sys.modules.get(self._module_name)
        sys.modules[self._module_name] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            if previous is not None:
                sys.modules[self._module_name] = previous
            else:
                sys.modules.pop(self._module_name, None)
            raise
        return module

    def watch(self) -> None:
        """Reload on every change of the file, from a daemon thread, until :meth:`remove`."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._poll, name=f"interceptkit-script:{self.path.name}",
                                             daemon=True)
            self._watcher.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            signature = _signature(self.path)
            if signature is not None and signature != self._signature:
                self.load()

    def remove(self) -> None:
        """Detach this script's hooks and stop watching its file. Safe to call twice."""
        self._stop.set()
        with self._lock:
            current, self._current = self._current, None
            if current is not None:
                current.detach()
            sys.modules.pop(self._module_name, None)
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=2)

    @property
    def active(self) -> bool:
        return self._current is not None

    def __repr__(self) -> str:
        state = "failed" if self.error and not self.active else ("active" if self.active else "removed")
        return f"<ScriptHandle {self.path} v{self.version} {state}>"


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text) or "script"


def load_script(proxy: Any, path: str | os.PathLike[str], *, reload: bool = True) -> ScriptHandle:
    """Attach the script at ``path`` to ``proxy``; see the module docstring.

    Raises FileNotFoundError when there is no such file. A script that fails
    on its first load is reported and watched (with ``reload``), so fixing
    the file attaches it.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"no script at {resolved}")
    handle = ScriptHandle(proxy, resolved)
    handle.load()
    if reload:
        handle.watch()
    return handle
