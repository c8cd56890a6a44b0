"""KV transfer throughput over gRPC against a plain TCP socket on loopback, in one run.

Steps:
1. Start a receiver process with a gRPC server running the real
   `KVTransferService` (decode side) and a plain TCP listener that reads
   into one preallocated buffer per payload, as the gRPC receiver does.
2. For each payload (64 MiB, and the float32 KV cache of a 1,024-token
   SmolLM2-135M prompt, 46,080 bytes per token = 47,185,920 bytes), send
   it --repeats times through `KVSender` (prefill side) and through the
   socket, alternating the two so both see the same machine load.
3. Report the median bytes/s of each path and their ratio.

Both ends are separate processes, as a prefill and a decode replica are, so
the sender's and receiver's Python code do not share one GIL. Each
transfer counts from the first byte sent to the receiver's acknowledgement,
which it sends once the payload sits in its buffer (gRPC: stored in the
KV store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass

HELP = "KV transfer bytes/s through gRPC against a plain TCP socket on loopback"

MIB = 1 << 20


@dataclass(frozen=True)
class Layout:
    """KV shapes of one payload: 2 * num_layers float32 tensors [1, kv_heads, tokens, head_dim]."""

    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    tokens: int

    @property
    def nbytes(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.tokens * self.head_dim * 4


# 2 x 32 layers x 8 KV heads x 64 dims x 4 bytes = 128 KiB per token; 512 tokens = 64 MiB.
PAYLOAD_64_MIB = Layout("64MiB", num_layers=32, num_kv_heads=8, head_dim=64, tokens=512)
# SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64, float32.
PAYLOAD_SMOLLM2_1024 = Layout(
    "smollm2-1024-tokens", num_layers=30, num_kv_heads=3, head_dim=64, tokens=1024
)
LAYOUTS = {layout.name: layout for layout in (PAYLOAD_64_MIB, PAYLOAD_SMOLLM2_1024)}

FINGERPRINT = "kv-transfer-benchmark"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def _channel_option(text: str) -> tuple[str, int]:
    name, separator, value = text.partition("=")
    if not separator or not name.startswith("grpc."):
        raise argparse.ArgumentTypeError(
            f"invalid gRPC option {text!r}: write NAME=INT with a name starting with 'grpc.'"
        )
    try:
        return name, int(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"invalid gRPC option {text!r}: the value must be an integer"
        ) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from disagg_worker.server.defaults import DEFAULT_CHUNK_BYTES

    parser.add_argument(
        "--payload",
        action="append",
        choices=sorted(LAYOUTS),
        help="payload to move; repeat for several (default: both)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="transfers per payload and path; the median counts (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-bytes",
        type=_positive_int,
        default=DEFAULT_CHUNK_BYTES,
        help="payload bytes per gRPC chunk message (default: %(default)s, the worker default)",
    )
    parser.add_argument(
        "--grpc-option",
        action="append",
        type=_channel_option,
        default=[],
        metavar="NAME=INT",
        help="extra gRPC channel option on both ends, e.g. grpc.http2.bdp_probe=0; repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    layouts = [LAYOUTS[name] for name in (args.payload or LAYOUTS)]
    largest = max(layout.nbytes for layout in layouts)
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    receiver = context.Process(
        target=_receiver_main,
        args=(child_end, layouts, largest, args.grpc_option),
        daemon=True,
    )
    receiver.start()
    try:
        if not parent_end.poll(120):
            raise RuntimeError("the receiver process did not start within 120 s")
        grpc_ports, tcp_port = parent_end.recv()
        results = asyncio.run(_measure(layouts, args, grpc_ports, tcp_port, parent_end))
    finally:
        receiver.terminate()
        receiver.join(10)

    report = {
        "chunk_bytes": args.chunk_bytes,
        "grpc_options": dict(args.grpc_option),
        "repeats": args.repeats,
        "payloads": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for result in results:
            print(
                f"{result['payload']}: {result['bytes']} bytes, gRPC "
                f"{result['grpc_bytes_per_s'] / 1e9:.2f} GB/s, raw TCP "
                f"{result['raw_tcp_bytes_per_s'] / 1e9:.2f} GB/s, ratio {result['ratio']:.2f}"
            )
    return 0


def _tensors(layout: Layout):
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (1, layout.num_kv_heads, layout.tokens, layout.head_dim)
    return [torch.randn(shape, generator=generator) for _ in range(2 * layout.num_layers)]


def _cpu_seconds(pipe) -> tuple[float, float]:
    """CPU seconds used so far by this (sending) process and by the receiver process."""
    pipe.send("cpu")
    return time.process_time(), pipe.recv()


def _cpu_delta(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


async def _measure(layouts, args, grpc_ports: dict[str, int], tcp_port: int, pipe) -> list[dict]:
    from disagg_worker.server.kv_transfer import KVPayload, KVSender, tensor_bytes

    sender = KVSender(
        chunk_bytes=args.chunk_bytes,
        max_message_bytes=64 * MIB,
        extra_channel_options=args.grpc_option,
    )
    connection = socket.create_connection(("127.0.0.1", tcp_port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    results = []
    try:
        for layout in layouts:
            tensors = _tensors(layout)
            buffers = [tensor_bytes(tensor) for tensor in tensors]
            prompt = list(range(layout.tokens))
            address = f"127.0.0.1:{grpc_ports[layout.name]}"

            payloads = [
                KVPayload(f"{layout.name}-{index}", FINGERPRINT, tensors, prompt, 0)
                for index in range(args.repeats + 1)
            ]
            # One warm-up transfer each opens the connections and faults in the buffers.
            await _send_grpc(sender, address, payloads[0])
            _send_raw(connection, buffers, layout.nbytes)
            grpc_seconds, raw_seconds, grpc_cpu, raw_cpu = [], [], [], []
            for payload in payloads[1:]:
                cpu_before = _cpu_seconds(pipe)
                grpc_seconds.append(await _send_grpc(sender, address, payload))
                cpu_between = _cpu_seconds(pipe)
                raw_seconds.append(_send_raw(connection, buffers, layout.nbytes))
                grpc_cpu.append(_cpu_delta(cpu_before, cpu_between))
                raw_cpu.append(_cpu_delta(cpu_between, _cpu_seconds(pipe)))
            grpc_rate = layout.nbytes / statistics.median(grpc_seconds)
            raw_rate = layout.nbytes / statistics.median(raw_seconds)
            gigabytes = layout.nbytes / 1e9
            results.append(
                {
                    "payload": layout.name,
                    "bytes": layout.nbytes,
                    "grpc_bytes_per_s": round(grpc_rate),
                    "raw_tcp_bytes_per_s": round(raw_rate),
                    "ratio": round(grpc_rate / raw_rate, 3),
                    # CPU seconds per GB moved, [sender, receiver]: less sensitive than
                    # wall time to other work on a shared machine.
                    "grpc_cpu_seconds_per_gb": _median_pair(grpc_cpu, gigabytes),
                    "raw_tcp_cpu_seconds_per_gb": _median_pair(raw_cpu, gigabytes),
                    "grpc_seconds": [round(s, 4) for s in grpc_seconds],
                    "raw_tcp_seconds": [round(s, 4) for s in raw_seconds],
                }
            )
    finally:
        connection.close()
        await sender.close()
    return results


def _median_pair(pairs: list[tuple[float, float]], gigabytes: float) -> list[float]:
    return [round(statistics.median(side) / gigabytes, 3) for side in zip(*pairs, strict=True)]


async def _send_grpc(sender, address: str, payload) -> float:
    started = time.perf_counter()
    await sender.send(address, payload)
    return time.perf_counter() - started


def _send_raw(connection: socket.socket, buffers, nbytes: int) -> float:
    started = time.perf_counter()
    connection.sendall(struct.pack("<Q", nbytes))
    for buffer in buffers:
        connection.sendall(buffer)
    if connection.recv(1) != b"k":
        raise RuntimeError("the raw TCP receiver closed the connection")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------
# Receiver process.


def _receiver_main(pipe, layouts, largest: int, grpc_options) -> None:
    asyncio.run(_receiver(pipe, layouts, largest, grpc_options))


async def _receiver(pipe, layouts, largest: int, grpc_options) -> None:
    import grpc
    import torch

    from disagg_worker import kv as kv_cache

    # Every transfer expires the previous entry on purpose; its warning is noise here.
    logging.getLogger(kv_cache.__name__).setLevel(logging.ERROR)
    from disagg_worker.metrics import WorkerMetrics
    from disagg_worker.server import kv_transfer

    # One server per layout, because a receiver validates against one model's shapes.
    ports = {}
    servers = []
    for layout in layouts:
        # Entries expire at the next transfer, so the store never contains more than one.
        store = kv_cache.KVStore(max_bytes=2 * largest, ttl_seconds=1e-3)
        expected = kv_transfer.ExpectedLayout(
            fingerprint=FINGERPRINT,
            dtype=torch.float32,
            num_layers=layout.num_layers,
            num_kv_heads=layout.num_kv_heads,
            head_dim=layout.head_dim,
            max_context=layout.tokens + 1,
        )
        service = kv_transfer.KVTransferService(store, expected, WorkerMetrics("decode"))
        server = grpc.aio.server(options=kv_transfer.channel_options(64 * MIB, grpc_options))
        server.add_generic_rpc_handlers([service.handler()])
        ports[layout.name] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)

    listener = socket.create_server(("127.0.0.1", 0))
    tcp_port = listener.getsockname()[1]
    threading.Thread(target=_raw_receiver, args=(listener,), daemon=True).start()
    pipe.send((ports, tcp_port))
    threading.Thread(target=_answer_cpu_queries, args=(pipe,), daemon=True).start()
    await servers[0].wait_for_termination()


def _answer_cpu_queries(pipe) -> None:
    """Send this process's CPU seconds (all threads) for every request on the pipe."""
    while True:
        try:
            pipe.recv()
        except EOFError:
            return
        pipe.send(time.process_time())


def _raw_receiver(listener: socket.socket) -> None:
    import torch

    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = bytearray(8)
    while True:
        if not _recv_exactly(connection, memoryview(header)):
            return
        (nbytes,) = struct.unpack("<Q", header)
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        if not _recv_exactly(connection, memoryview(buffer.numpy())):
            return
        connection.sendall(b"k")


def _recv_exactly(connection: socket.socket, view: memoryview) -> bool:
    received = 0
    while received < len(view):
        count = connection.recv_into(view[received:])
        if count == 0:
            return False
        received += count
    return True
