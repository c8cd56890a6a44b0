"""Decode engine: continuous batching on one worker thread.

Every step advances all running requests by one token in one batched
forward. Between steps the thread applies cancellations, prefills requests
that brought prompt ids (local prefill), admits requests that brought KV
from a prefill replica (remote prefill), and drops finished ones.

The Decode gRPC service calls `submit` with an `on_event(token_ids,
finish_reason)` callback. The engine thread calls it once per step per
request with the new token ids and finish_reason None. The last call
carries the last token ids (possibly none) and one of these reasons:
- "stop": an end-of-sequence token, which is included in token_ids;
- "length": max_tokens or the model's context reached;
- "cancelled": after `cancel`, or when the engine stopped;
- "error": the forward pass raised, and the error was logged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from disagg_worker.engine.batch import BatchedCache
from disagg_worker.engine.errors import Draining, QueueFull
from disagg_worker.engine.forward import check_prompt, run_prompt
from disagg_worker.kv import KVEntry, cache_to_tensors
from disagg_worker.model import LoadedModel
from disagg_worker.sampling import SamplingParams, sample, sample_batch

logger = logging.getLogger(__name__)

EventCallback = Callable[[list[int], str | None], None]

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


@dataclass
class DecodeRequest:
    """One generation request; exactly one of `prompt_ids` and `kv` is set.

    max_tokens counts every generated token, including a first token that
    came from a remote prefill together with `kv`.
    """

    request_id: str
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    ignore_eos: bool = False
    prompt_ids: Sequence[int] | None = None
    kv: KVEntry | None = None


@dataclass
class _Sequence:
    request: DecodeRequest
    on_event: EventCallback
    sampling: SamplingParams
    prompt_ids: list[int]
    # Tokens generated so far, the first one included.
    generated: int = 0
    # Token to feed at the next step.
    next_token: int = 0
    # Tokens whose KV is in the cache (the row's real, unpadded length).
    cached_tokens: int = 0
    cancelled: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id


class DecodeEngine:
    """Continuous-batching decode on one worker thread."""

    def __init__(self, loaded: LoadedModel, max_queue: int, max_batch: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.loaded = loaded
        self.max_queue = max_queue
        self.max_batch = max_batch

        # Admission and membership state, guarded by _condition.
        self._condition = threading.Condition()
        self._pending: deque[_Sequence] = deque()
        # Requests taken from the queue and being prefilled or joining the batch.
        self._joining = 0
        self._running: list[_Sequence] = []
        self._active: dict[str, _Sequence] = {}
        self._draining = False
        self._stopping = False
        # The padded KV cache of _running; only the engine thread touches it.
        self._batch = BatchedCache()

        # Counters for metrics; written by the worker thread only.
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.steps_total = 0
        self.batched_rows_total = 0
        self.finished_total: dict[str, int] = dict.fromkeys(
            (FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED, FINISH_ERROR), 0
        )

        self._thread = threading.Thread(target=self._run, name="decode-engine", daemon=True)
        self._thread.start()
        logger.info(
            "started decode engine model=%s max_queue=%d max_batch=%d",
            loaded.name,
            max_queue,
            max_batch,
        )

    @property
    def queue_depth(self) -> int:
        """Requests admitted and waiting to join the batch."""
        with self._condition:
            return len(self._pending)

    @property
    def inflight(self) -> int:
        """Requests prefilling, joining or decoding in the batch."""
        with self._condition:
            return self._joining + len(self._running)

    @property
    def draining(self) -> bool:
        with self._condition:
            return self._draining

    def submit(self, request: DecodeRequest, on_event: EventCallback) -> None:
        """Admit a request; raise QueueFull, Draining or ValueError at once when it cannot run."""
        sequence = self._prepare(request, on_event)
        with self._condition:
            if self._draining:
                raise Draining(
                    f"decode engine is draining; request_id={request.request_id} rejected"
                )
            if request.request_id in self._active:
                raise ValueError(
                    f"request_id={request.request_id} is already running; use a new id"
                )
            if len(self._pending) >= self.max_queue:
                raise QueueFull(
                    f"decode queue full ({self.max_queue} waiting); "
                    f"request_id={request.request_id} rejected"
                )
            self._pending.append(sequence)
            self._active[request.request_id] = sequence
            self._condition.notify_all()

    def cancel(self, request_id: str) -> bool:
        """Free the request's slot at the next step boundary; False if it is not active."""
        with self._condition:
            sequence = self._active.get(request_id)
            if sequence is None:
                return False
            sequence.cancelled = True
            self._condition.notify_all()
        return True

    def drain(self, timeout: float | None = None) -> bool:
        """Stop admitting, let admitted requests finish, then stop the thread.

        Returns False when `timeout` seconds passed first; the requests still
        active then end with finish_reason "cancelled".
        """
        with self._condition:
            self._draining = True
            finished = self._condition.wait_for(lambda: not self._active, timeout=timeout)
            self._stopping = True
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        logger.info("stopped decode engine model=%s drained=%s", self.loaded.name, finished)
        return finished

    def close(self) -> None:
        """Stop now; active requests end with finish_reason "cancelled"."""
        self.drain(timeout=0)

    # -- engine thread ------------------------------------------------------

    def _prepare(self, request: DecodeRequest, on_event: EventCallback) -> _Sequence:
        request_id = request.request_id
        if (request.prompt_ids is None) == (request.kv is None):
            raise ValueError(f"request_id={request_id}: set exactly one of prompt_ids and kv")
        if request.max_tokens < 1:
            raise ValueError(
                f"request_id={request_id}: max_tokens must be >= 1, got {request.max_tokens}"
            )
        if request.kv is None:
            prompt_ids = check_prompt(self.loaded, request_id, request.prompt_ids)
        else:
            prompt_ids = check_prompt(self.loaded, request_id, request.kv.prompt_token_ids)
            self._check_kv(request_id, request.kv, len(prompt_ids))
        return _Sequence(request, on_event, request.sampling.with_seed(), prompt_ids)

    def _check_kv(self, request_id: str, kv: KVEntry, prompt_tokens: int) -> None:
        loaded = self.loaded
        expected_count = 2 * loaded.num_layers
        if len(kv.tensors) != expected_count:
            raise ValueError(
                f"request_id={request_id}: KV has {len(kv.tensors)} tensors, "
                f"the model needs {expected_count}"
            )
        expected_shape = (1, loaded.num_kv_heads, prompt_tokens, loaded.head_dim)
        for index, tensor in enumerate(kv.tensors):
            if tuple(tensor.shape) != expected_shape:
                raise ValueError(
                    f"request_id={request_id}: KV tensor {index} has shape {tuple(tensor.shape)}, "
                    f"expected {expected_shape}"
                )
            if tensor.dtype != loaded.dtype:
                raise ValueError(
                    f"request_id={request_id}: KV tensor {index} is {tensor.dtype}, "
                    f"the model runs in {loaded.dtype}"
                )
        if not 0 <= kv.first_token_id < loaded.vocab_size:
            raise ValueError(
                f"request_id={request_id}: first_token_id {kv.first_token_id} is outside "
                f"the vocabulary [0, {loaded.vocab_size})"
            )

    def _run(self) -> None:
        with torch.inference_mode():
            while self._cycle():
                pass
        # Anything still active at shutdown ends as cancelled.
        with self._condition:
            leftovers = list(self._active.values())
            self._pending.clear()
            self._running = []
        for sequence in leftovers:
            self._finish(sequence, [], FINISH_CANCELLED)
        self._batch = BatchedCache()

    def _cycle(self) -> bool:
        """Run one step boundary and one batched step; return False to stop the thread."""
        # 1. Wait for work; take cancellations and as many waiting requests as fit.
        with self._condition:
            self._condition.wait_for(lambda: self._pending or self._running or self._stopping)
            if self._stopping:
                return False
            cancelled_waiting = [seq for seq in self._pending if seq.cancelled]
            for sequence in cancelled_waiting:
                self._pending.remove(sequence)
            free_slots = self.max_batch - len(self._running)
            admitted = []
            while self._pending and len(admitted) < free_slots:
                admitted.append(self._pending.popleft())
            self._joining += len(admitted)

        for sequence in cancelled_waiting:
            self._finish(sequence, [], FINISH_CANCELLED)

        # 2. Leave: cancelled running requests give up their rows.
        self._remove_rows(
            [row for row, seq in enumerate(self._running) if seq.cancelled], FINISH_CANCELLED
        )

        # 3. Join: prefill or load KV for the admitted requests, then add their rows.
        if admitted:
            self._join(admitted)

        # 4. Step: one batched forward for every running request.
        if self._running:
            self._step()
        return True

    def _join(self, admitted: list[_Sequence]) -> None:
        # NOTE: a local prefill runs as one block between two steps, so a long
        # prompt delays every running request by its whole prefill time.
        joined: list[_Sequence] = []
        caches: list[list[torch.Tensor]] = []
        for sequence in admitted:
            try:
                tensors = self._start(sequence)
            except Exception:
                logger.exception("decode admission failed request_id=%s", sequence.request_id)
                self._finish(sequence, [], FINISH_ERROR, joining=True)
                continue
            if tensors is None:
                continue
            joined.append(sequence)
            caches.append(tensors)
        try:
            self._batch.add(caches)
        except Exception:
            logger.exception("building the decode batch failed; ending %d requests", len(joined))
            for sequence in joined:
                self._finish(sequence, [], FINISH_ERROR, joining=True)
            self._fail_running()
            return
        with self._condition:
            self._running.extend(joined)
            self._joining -= len(joined)

    def _start(self, sequence: _Sequence) -> list[torch.Tensor] | None:
        """Produce a joining request's KV; return None when it already finished."""
        request = sequence.request
        if sequence.cancelled:
            self._finish(sequence, [], FINISH_CANCELLED, joining=True)
            return None

        if request.kv is not None:
            # Remote prefill: the client already has the first token.
            tensors = [tensor.to(self.loaded.device) for tensor in request.kv.tensors]
            first_token = request.kv.first_token_id
            emitted: list[int] = []
            # The batch keeps its own copy; dropping this reference frees the received KV.
            sequence.request = dataclasses.replace(request, kv=None)
        else:
            logits, cache = run_prompt(self.loaded, sequence.prompt_ids)
            first_token = sample(logits, sequence.sampling, step_index=0)
            tensors = cache_to_tensors(cache)
            emitted = [first_token]
            self.prompt_tokens_total += len(sequence.prompt_ids)
            self.generation_tokens_total += 1

        sequence.generated = 1
        sequence.next_token = first_token
        sequence.cached_tokens = len(sequence.prompt_ids)
        logger.debug(
            "joining decode batch request_id=%s prefill=%s prompt_tokens=%d",
            sequence.request_id,
            "local" if emitted else "remote",
            len(sequence.prompt_ids),
        )
        reason = self._finish_reason(sequence, first_token)
        if reason is not None:
            self._finish(sequence, emitted, reason, joining=True)
            return None
        if emitted:
            self._emit(sequence, emitted, None)
        return tensors

    def _step(self) -> None:
        running = self._running
        input_ids = torch.tensor(
            [[seq.next_token] for seq in running], dtype=torch.long, device=self.loaded.device
        )
        position_ids = torch.tensor(
            [[seq.cached_tokens] for seq in running], dtype=torch.long, device=self.loaded.device
        )
        try:
            output = self.loaded.model(
                input_ids=input_ids,
                attention_mask=self._batch.attention_mask(),
                position_ids=position_ids,
                cache=self._batch.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            tokens = sample_batch(
                output.logits[:, -1, :],
                [seq.sampling for seq in running],
                [seq.generated for seq in running],
            )
        except Exception:
            logger.exception("decode step failed; ending %d running requests", len(running))
            self._fail_running()
            return
        self._batch.cache = output.cache
        self.steps_total += 1
        self.batched_rows_total += len(running)

        finished_rows: list[int] = []
        reasons: dict[int, str] = {}
        for row, (sequence, token) in enumerate(zip(running, tokens, strict=True)):
            sequence.cached_tokens += 1
            sequence.generated += 1
            sequence.next_token = token
            self.generation_tokens_total += 1
            reason = self._finish_reason(sequence, token)
            if reason is None:
                self._emit(sequence, [token], None)
            else:
                finished_rows.append(row)
                reasons[row] = reason
        self._remove_rows(finished_rows, reasons, tokens)

    def _finish_reason(self, sequence: _Sequence, token: int) -> str | None:
        if not sequence.request.ignore_eos and token in self.loaded.eos_token_ids:
            return FINISH_STOP
        if sequence.generated >= sequence.request.max_tokens:
            return FINISH_LENGTH
        # Prompt plus generated tokens may not exceed the model's context, as in
        # transformers' generate with max_length = max_position_embeddings.
        if sequence.cached_tokens + 1 >= self.loaded.max_context:
            return FINISH_LENGTH
        return None

    def _remove_rows(
        self,
        rows: list[int],
        reasons: dict[int, str] | str,
        tokens: list[int] | None = None,
    ) -> None:
        """Drop `rows` from the batch, then send each its last event."""
        if not rows:
            return
        leaving = [self._running[row] for row in rows]
        self._batch.remove(rows)
        with self._condition:
            self._running = [seq for row, seq in enumerate(self._running) if row not in set(rows)]
        for row, sequence in zip(rows, leaving, strict=True):
            reason = reasons if isinstance(reasons, str) else reasons[row]
            emitted = [] if tokens is None else [tokens[row]]
            self._finish(sequence, emitted, reason)

    def _fail_running(self) -> None:
        failed = self._running
        with self._condition:
            self._running = []
        self._batch = BatchedCache()
        for sequence in failed:
            self._finish(sequence, [], FINISH_ERROR)

    def _finish(
        self, sequence: _Sequence, token_ids: list[int], reason: str, *, joining: bool = False
    ) -> None:
        # Counts drop before the last event, so a caller that received it finds the slot free.
        with self._condition:
            self._active.pop(sequence.request_id, None)
            if joining:
                self._joining -= 1
            self._condition.notify_all()
        self.finished_total[reason] = self.finished_total.get(reason, 0) + 1
        level = logging.INFO if reason in (FINISH_CANCELLED, FINISH_ERROR) else logging.DEBUG
        logger.log(
            level,
            "finished decode request_id=%s finish_reason=%s generated=%d",
            sequence.request_id,
            reason,
            sequence.generated,
        )
        self._emit(sequence, token_ids, reason)

    def _emit(self, sequence: _Sequence, token_ids: list[int], reason: str | None) -> None:
        try:
            sequence.on_event(token_ids, reason)
        except Exception:
            # A broken consumer must not stop the batch; its request is cancelled.
            logger.exception("on_event raised request_id=%s; cancelling it", sequence.request_id)
            sequence.cancelled = True
