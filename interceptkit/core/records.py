"""Frozen records that are cheap to make: the events and commands of the hot path.

Events and commands are frozen dataclasses with keyword fields: nobody
can change one after it is made (layer events are named tuples, cheaper
still: see layers.py). A frozen dataclass's own
``__init__`` sets each field with ``object.__setattr__(self, name, value)``,
a generic attribute lookup per field; a forwarded request makes about six
of these records, and that lookup was a measurable share of what a
request costs (``bench/cost.py``). :func:`set_slots_directly` gives such a
class an ``__init__`` that stores each field through its slot's own
descriptor instead: the same signature, the same defaults, still frozen
(assigning afterwards raises ``FrozenInstanceError`` as before).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["set_slots_directly"]


def set_slots_directly(*classes: type[Any]) -> None:
    """Replace each class's generated ``__init__`` with one that sets its slots directly.

    Each class must be a ``@dataclass(frozen=True, slots=True, kw_only=True)``
    whose fields have no ``default_factory`` (raises ``TypeError`` otherwise).
    """
    for cls in classes:
        cls.__init__ = _direct_init(cls)


def _direct_init(cls: type[Any]) -> Any:
    params = cls.__dataclass_params__
    if not (params.frozen and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    namespace: dict[str, Any] = {}
    arguments, lines = [], []
    for f in dataclasses.fields(cls):
        if not f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only keyword fields with plain defaults")
        descriptor = getattr(cls, f.name)
        if type(descriptor).__name__ != "member_descriptor":
            raise TypeError(f"{cls.__name__}.{f.name} is not a slot")
        namespace[f"_set_{f.name}"] = descriptor.__set__
        if f.default is dataclasses.MISSING:
            arguments.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            arguments.append(f"{f.name}=_default_{f.name}")
        lines.append(f"    _set_{f.name}(self, {f.name})")
    signature = f"self, *, {', '.join(arguments)}" if arguments else "self"
    source = f"def __init__({signature}):\n" + ("\n".join(lines) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 -- the text is made above from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    return init
