"""Custom ``ctx`` members from ``CONDUCTOR["CONTEXT"]``, built once per process.

The setting is the dotted path of a callable taking no arguments and returning a dict;
each item becomes an attribute of every handler's ``ctx`` (``ctx.mailer``, ...). The
worker builds it when it starts, so a broken factory stops the worker at once; other
processes that run handlers (``testing.drain``, django-q clusters) build it on first
use. The members are shared by all handler threads of the process, so they must be
thread-safe (a client or a connection pool, not per-execution state).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import conf
from .context import Context

#: Names a custom member may not take (besides anything ``Context`` defines).
RESERVED = frozenset({
    "execution_id", "task_name", "queue", "attempt", "signal", "timeout", "deadline", "logger",
})

_lock = threading.Lock()
_built: dict[str, dict[str, Any]] = {}


def load_factory(path: str) -> Any:
    """The callable named by ``path``; ``ImproperlyConfigured`` if it cannot be imported."""
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"CONDUCTOR['CONTEXT'] {path!r} cannot be imported: {exc}") \
            from exc
    if not callable(factory):
        raise ImproperlyConfigured(f"CONDUCTOR['CONTEXT'] {path!r} is not callable")
    return factory


def build(path: str) -> dict[str, Any]:
    """Call the factory and check the names it returns."""
    value = load_factory(path)()
    if not isinstance(value, dict):
        raise ImproperlyConfigured(
            f"CONDUCTOR['CONTEXT'] {path!r} must return a dict, not {type(value).__name__}"
        )
    for name in value:
        if (not isinstance(name, str) or not name.isidentifier() or name.startswith("_")
                or name in RESERVED or hasattr(Context, name)):
            raise ImproperlyConfigured(
                f"CONDUCTOR['CONTEXT'] {path!r} returned the member name {name!r}: names must "
                "be identifiers not starting with '_' and not already used by ctx"
            )
    return dict(value)


def members() -> dict[str, Any]:
    """The custom members of this process (built on the first call)."""
    path = conf.get("CONTEXT")
    if not path:
        return {}
    built = _built.get(path)
    if built is None:
        with _lock:
            built = _built.get(path)
            if built is None:
                built = _built[path] = build(path)
    return built


def apply(ctx: Context) -> None:
    """Set the custom members as attributes of ``ctx``."""
    for name, value in members().items():
        if name in vars(ctx):
            raise ImproperlyConfigured(f"CONDUCTOR['CONTEXT'] member {name!r} is already a "
                                       "member of ctx")
        setattr(ctx, name, value)
