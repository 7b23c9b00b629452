"""Start-up checks of a handler class: mistakes that would otherwise show only as UNIMPLEMENTED.

`rpcpoll serve` logs each as a warning before it serves: a handler that overrides no rpc of its
service, and a method whose name looks like a misspelt rpc (`eco` for `echo`, or the wire name
`Echo` for the Python name `echo`) while that rpc is left unimplemented.
"""

from __future__ import annotations

import difflib

from ..service import AnyHandler, AsyncHandler, Handler

__all__ = ["handler_warnings"]

# How alike two names must be (difflib's ratio) to call one a misspelling of the other.
_CUTOFF = 0.75


def handler_warnings(handler_class: type[AnyHandler]) -> list[str]:
    """One line per likely mistake in `handler_class` (empty when it looks right)."""
    base = _generated_base(handler_class)
    if base is None:
        return []
    service = base.SERVICE
    rpcs = {method.python_name: method.name for method in service.methods.values()}
    overridden = {
        name for name in rpcs if getattr(handler_class, name, None) is not base.__dict__.get(name)
    }
    missing = [name for name in rpcs if name not in overridden]
    name = handler_class.__name__
    warnings = []
    if rpcs and not overridden:
        shown = ", ".join(sorted(rpcs))
        warnings.append(
            f"{name} overrides no rpc of {service.full_name}: every call will answer"
            f" UNIMPLEMENTED (its rpcs: {shown})"
        )
    for defined in _own_methods(handler_class, base):
        if defined in rpcs:
            continue
        match = _misspelt(defined, missing, rpcs)
        if match is not None:
            warnings.append(
                f"{name}.{defined} is not an rpc of {service.full_name}: did you mean"
                f" {match}? ({match} is not overridden, so it answers UNIMPLEMENTED)"
            )
    return warnings


def _generated_base(handler_class: type[AnyHandler]) -> type[AnyHandler] | None:
    """The generated SHandler in the class's ancestry: the class that defines SERVICE."""
    for cls in handler_class.__mro__:
        if "SERVICE" in cls.__dict__ and issubclass(cls, (Handler, AsyncHandler)):
            return cls
    return None


def _own_methods(handler_class: type[AnyHandler], base: type[AnyHandler]) -> list[str]:
    """Public callables defined by the user's classes (those between the class and `base`)."""
    names: list[str] = []
    for cls in handler_class.__mro__:
        if cls is base:
            break
        for attr, value in cls.__dict__.items():
            if not attr.startswith("_") and callable(value) and attr not in names:
                names.append(attr)
    return names


def _misspelt(defined: str, missing: list[str], rpcs: dict[str, str]) -> str | None:
    """The unimplemented rpc (Python name) that `defined` looks like a misspelling of."""
    by_wire = {wire.lower(): python for python, wire in rpcs.items() if python in missing}
    folded = defined.lower().replace("_", "")
    for wire, python in by_wire.items():
        if folded == wire.replace("_", ""):
            return python  # the wire name ("Echo", "GetUser") instead of echo, get_user
    found = difflib.get_close_matches(defined.lower(), missing, n=1, cutoff=_CUTOFF)
    return found[0] if found else None
