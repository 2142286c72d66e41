"""The one consumer runtime (see `runtime.py`) and what handlers import from it."""

from shared.runtime.context import HandlerContext, HandlerOutcome
from shared.runtime.records import ConsumedRecord
from shared.runtime.runtime import ConsumerRuntime, RuntimeOptions

__all__ = [
    "ConsumedRecord",
    "ConsumerRuntime",
    "HandlerContext",
    "HandlerOutcome",
    "RuntimeOptions",
]
