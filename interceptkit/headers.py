"""HTTP header fields as they travel: raw ``(name, value)`` byte pairs with string views.

Part of the flow data model (``interceptkit.flow`` re-exports :class:`Headers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

HeaderFields = list[tuple[bytes, bytes]]


def _b(value: str | bytes) -> bytes:
    # Header octets are latin-1 on the wire (RFC 9110 5.5): every byte maps.
    return value if isinstance(value, bytes) else value.encode("latin-1")


#: Bound once: ``cls.__new__`` is looked up in full on every call (CPython 3.11
#: specialises neither it nor a classmethod called on its class).
_new = object.__new__


class Headers:
    """HTTP header fields: case-insensitive, multi-valued, order and casing kept.

    ``headers["Content-Type"]`` is the first value (a ``str``); ``get_all``
    gives every value; assigning replaces all fields of that name in place of
    the first one; :meth:`add` appends. ``fields`` is the raw wire list.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Iterable[tuple[str | bytes, str | bytes]] = ()) -> None:
        self.fields: HeaderFields = [(_b(n), _b(v)) for n, v in fields]

    @classmethod
    def from_wire(cls, fields: HeaderFields) -> Headers:
        """Wrap a list of byte pairs without copying or checking it."""
        headers = _new(cls)
        headers.fields = fields
        return headers

    def get_all(self, name: str) -> list[str]:
        key = _b(name).lower()
        return [v.decode("latin-1") for n, v in self.fields if n.lower() == key]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = _b(name).lower()
        for n, v in self.fields:
            if n.lower() == key:
                return v.decode("latin-1")
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self.get(
            name.decode("latin-1") if isinstance(name, bytes) else name
        ) is not None

    def __setitem__(self, name: str, value: str) -> None:
        key = _b(name).lower()
        new: HeaderFields = []
        placed = False
        for n, v in self.fields:
            if n.lower() != key:
                new.append((n, v))
            elif not placed:
                new.append((n, _b(value)))
                placed = True
        if not placed:
            new.append((_b(name), _b(value)))
        self.fields[:] = new

    def __delitem__(self, name: str) -> None:
        key = _b(name).lower()
        if not any(n.lower() == key for n, _ in self.fields):
            raise KeyError(name)
        self.fields[:] = [(n, v) for n, v in self.fields if n.lower() != key]

    def add(self, name: str, value: str) -> None:
        self.fields.append((_b(name), _b(value)))

    def pop(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name, default)
        if name in self:
            del self[name]
        return value

    def keys(self) -> list[str]:
        seen: dict[bytes, str] = {}
        for n, _ in self.fields:
            seen.setdefault(n.lower(), n.decode("latin-1"))
        return list(seen.values())

    def items(self) -> list[tuple[str, str]]:
        """Every field as ``(name, value)`` in wire order, repeats included."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.fields]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self.fields == other.fields
        if isinstance(other, dict):
            return {k.lower(): v for k, v in self.items()} == {
                str(k).lower(): v for k, v in other.items()
            }
        return NotImplemented

    def copy(self) -> Headers:
        return Headers.from_wire(list(self.fields))

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def wire_headers(fields: HeaderFields) -> Headers:
    """``Headers.from_wire(fields)`` as a plain function: the core wraps two lists per request."""
    headers = _new(Headers)
    headers.fields = fields
    return headers
