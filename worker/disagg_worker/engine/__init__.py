"""Inference engines of the data plane: one thread each, callable from asyncio.

`PrefillEngine` runs whole prompts one at a time and returns the first token
and the KV cache tensors. `DecodeEngine` runs continuous batching: every step
advances all running requests in one batched forward.
"""

from disagg_worker.engine.decode import DecodeEngine, DecodeRequest
from disagg_worker.engine.errors import Draining, QueueFull
from disagg_worker.engine.prefill import PrefillEngine, PrefillResult

__all__ = [
    "DecodeEngine",
    "DecodeRequest",
    "Draining",
    "PrefillEngine",
    "PrefillResult",
    "QueueFull",
]
