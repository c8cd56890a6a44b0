"""Prefill engine: runs whole prompts one at a time on a worker thread.

The Prefill gRPC service awaits `PrefillEngine.prefill`, then sends the
returned KV tensors to the decode replica. Admission is bounded: with
`max_queue` requests already waiting, `prefill` raises QueueFull at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from disagg_worker.engine.errors import Draining, QueueFull
from disagg_worker.engine.forward import check_prompt, run_prompt
from disagg_worker.kv import cache_to_tensors
from disagg_worker.model import LoadedModel
from disagg_worker.sampling import SamplingParams, sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefillResult:
    """Output of one prefill: the first token and the prompt's KV cache."""

    first_token_id: int
    # 2 * num_layers CPU tensors [1, kv_heads, prompt tokens, head_dim], see disagg_worker.kv.
    tensors: list[torch.Tensor]
    # Seconds in the model forward pass and sampling.
    prefill_seconds: float
    # Seconds from admission until the worker thread started the request.
    queue_seconds: float

    @property
    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.tensors)


@dataclass
class _Job:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    admitted_at: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class PrefillEngine:
    """One worker thread that prefills admitted prompts in arrival order."""

    def __init__(self, loaded: LoadedModel, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.loaded = loaded
        self.max_queue = max_queue
        self._condition = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._running = 0
        self._draining = False
        self._stopping = False
        # Counters for metrics; written by the worker thread only.
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.completed_total = 0
        self.failed_total = 0
        self._thread = threading.Thread(target=self._run, name="prefill-engine", daemon=True)
        self._thread.start()
        logger.info("started prefill engine model=%s max_queue=%d", loaded.name, max_queue)

    @property
    def queue_depth(self) -> int:
        """Requests admitted and waiting for the worker thread."""
        with self._condition:
            return len(self._waiting)

    @property
    def inflight(self) -> int:
        """Requests being prefilled now (0 or 1)."""
        with self._condition:
            return self._running

    @property
    def draining(self) -> bool:
        with self._condition:
            return self._draining

    async def prefill(
        self, request_id: str, prompt_ids: Sequence[int], sampling: SamplingParams
    ) -> PrefillResult:
        """Prefill one prompt; raise QueueFull or Draining at once when it cannot be admitted.

        Cancelling the awaiting task removes the request if it is still waiting.
        """
        job = self._admit(request_id, prompt_ids, sampling)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def submit(
        self, request_id: str, prompt_ids: Sequence[int], sampling: SamplingParams
    ) -> concurrent.futures.Future:
        """Admit one prompt from synchronous code; the future resolves to a PrefillResult."""
        return self._admit(request_id, prompt_ids, sampling).future

    def drain(self, timeout: float | None = None) -> bool:
        """Stop admitting, finish admitted requests, then stop the thread.

        Returns False when `timeout` seconds passed first; requests still
        waiting then fail with Draining.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            self._draining = True
            finished = self._condition.wait_for(
                lambda: not self._waiting and not self._running,
                timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
            )
        self._stop()
        return finished

    def close(self) -> None:
        """Stop now: waiting requests fail with Draining, the running one finishes."""
        self.drain(timeout=0)

    def _admit(self, request_id: str, prompt_ids: Sequence[int], sampling: SamplingParams) -> _Job:
        ids = check_prompt(self.loaded, request_id, prompt_ids)
        job = _Job(request_id, ids, sampling.with_seed(), time.monotonic())
        with self._condition:
            if self._draining:
                raise Draining(f"prefill engine is draining; request_id={request_id} rejected")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(
                    f"prefill queue full ({self.max_queue} waiting); "
                    f"request_id={request_id} rejected"
                )
            self._waiting.append(job)
            self._condition.notify_all()
        return job

    def _withdraw(self, job: _Job) -> None:
        with self._condition:
            if job in self._waiting:
                self._waiting.remove(job)
                self._condition.notify_all()
                logger.info("withdrew cancelled prefill request_id=%s", job.request_id)

    def _stop(self) -> None:
        with self._condition:
            self._stopping = True
            abandoned = list(self._waiting)
            self._waiting.clear()
            self._condition.notify_all()
        for job in abandoned:
            logger.warning("dropped waiting prefill on shutdown request_id=%s", job.request_id)
            job.future.set_exception(
                Draining(f"prefill engine stopped before request_id={job.request_id} ran")
            )
        if threading.current_thread() is not self._thread:
            self._thread.join()
        logger.info("stopped prefill engine model=%s", self.loaded.name)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return
                job = self._waiting.popleft()
                self._running = 1
            try:
                self._execute(job)
            finally:
                with self._condition:
                    self._running = 0
                    self._condition.notify_all()

    def _execute(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        started = time.monotonic()
        try:
            logits, cache = run_prompt(self.loaded, job.prompt_ids)
            first_token_id = sample(logits, job.sampling, step_index=0)
            tensors = [tensor.to("cpu").contiguous() for tensor in cache_to_tensors(cache)]
        except Exception as error:
            self.failed_total += 1
            logger.exception("prefill failed request_id=%s", job.request_id)
            job.future.set_exception(error)
            return
        finished = time.monotonic()
        self.prompt_tokens_total += len(job.prompt_ids)
        self.generation_tokens_total += 1
        self.completed_total += 1
        job.future.set_result(
            PrefillResult(
                first_token_id=first_token_id,
                tensors=tensors,
                prefill_seconds=finished - started,
                queue_seconds=started - job.admitted_at,
            )
        )
