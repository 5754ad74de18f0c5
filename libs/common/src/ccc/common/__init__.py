"""CCC common runtime: what every service and the gateway share, and nothing domain-specific."""

from . import tracing
from .binary import Binary
from .bus import Bus
from .context import Caller, Context
from .errors import (
    BadRequest,
    CCCError,
    Conflict,
    Forbidden,
    Internal,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Timeout,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from .service import Service
from .settings import Settings

__all__ = [
    "BadRequest",
    "Binary",
    "Bus",
    "CCCError",
    "Caller",
    "Conflict",
    "Context",
    "Forbidden",
    "Internal",
    "Invalid",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Service",
    "Settings",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "tracing",
]
