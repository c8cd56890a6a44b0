"""Worker service: the load and identity report the router polls to choose replicas."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.proto import worker_pb2_grpc


class WorkerService(worker_pb2_grpc.WorkerServicer):
    def __init__(self, load_report: Callable[[], pb.GetLoadResponse]) -> None:
        self._load_report = load_report

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLoadResponse:
        return self._load_report()
