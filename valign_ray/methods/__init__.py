"""The training methods, looked up by ``loss.name``.

A name is a registered short name (below) or an importable ``module:attribute`` path to a
:class:`~valign_ray.methods.base.Method`, so a method defined outside this package still
reaches Ray workers (they import it by path). Adding a method: its module, its test, and one
line here.
"""

from __future__ import annotations

import importlib

from valign_ray.config_loader import ConfigError
from valign_ray.methods.base import Method

REGISTRY: dict[str, str] = {
    "kto": "valign_ray.methods.kto:METHOD",
    "dpo": "valign_ray.methods.dpo:METHOD",
    "sft": "valign_ray.methods.sft:METHOD",
}


def get_method(name: str) -> Method:
    """The :class:`Method` named ``name`` (a registered name or ``module:attribute``)."""
    path = REGISTRY.get(name, name)
    if ":" not in path:
        raise ConfigError(
            f"loss.name: unknown method {name!r}; valid: {', '.join(REGISTRY)} or an importable "
            "'module:ATTRIBUTE' path to a valign_ray.methods.base.Method"
        )
    module_name, attr = path.split(":", 1)
    try:
        method = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"loss.name: cannot import method {path!r}: {exc}") from None
    if not isinstance(method, Method):
        raise ConfigError(f"loss.name: {path!r} is a {type(method).__name__}, not a Method")
    return method
