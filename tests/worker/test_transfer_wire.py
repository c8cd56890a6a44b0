"""The hand-written chunk codec of the KV transfer produces and reads ordinary protobuf."""

from __future__ import annotations

import pytest
import torch
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.kv_transfer import (
    ChunkParts,
    ChunkView,
    decode_message,
    encode_message,
    iter_chunks,
    tensor_bytes,
)


@pytest.mark.parametrize("offset", [0, 1, 127, 128, 300, 2**40])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 70_000])
def test_encoded_chunk_parses_as_protobuf(offset, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = encode_message(ChunkParts(offset, [memoryview(data[:10]), memoryview(data[10:])]))
    message = pb.KVTransferMessage.FromString(raw)
    assert message.WhichOneof("body") == "chunk"
    assert message.chunk.offset == offset
    assert message.chunk.data == data


@pytest.mark.parametrize("offset", [0, 5, 2**33])
def test_protobuf_chunk_decodes_without_protobuf(offset):
    data = b"\x01\x02" * 5000
    raw = pb.KVTransferMessage(chunk=pb.KVChunk(offset=offset, data=data)).SerializeToString()
    decoded = decode_message(raw)
    assert isinstance(decoded, ChunkView)
    assert decoded.offset == offset
    assert bytes(decoded.data) == data


def test_header_decodes_as_message():
    header = pb.KVHeader(request_id="r1", total_bytes=12, prompt_token_ids=[1, 2])
    decoded = decode_message(pb.KVTransferMessage(header=header).SerializeToString())
    assert isinstance(decoded, pb.KVTransferMessage)
    assert decoded.header == header


def test_chunk_with_unknown_field_decodes_through_protobuf():
    message = pb.KVTransferMessage(chunk=pb.KVChunk(offset=3, data=b"abc"))
    # Field 15 (varint) appended to the KVChunk: the fast parser declines, protobuf skips it.
    inner = message.chunk.SerializeToString() + bytes([15 << 3, 1])
    raw = bytes([(2 << 3) | 2, len(inner)]) + inner
    decoded = decode_message(raw)
    assert isinstance(decoded, ChunkView)
    assert (decoded.offset, bytes(decoded.data)) == (3, b"abc")


def test_empty_message_decodes_as_message_without_body():
    decoded = decode_message(b"")
    assert isinstance(decoded, pb.KVTransferMessage)
    assert decoded.WhichOneof("body") is None


def test_chunks_cover_buffers_in_order():
    buffers = [memoryview(bytes([i]) * size) for i, size in enumerate([5, 0, 7, 3])]
    chunks = list(iter_chunks(buffers, 4))
    assert [chunk.offset for chunk in chunks] == [0, 4, 8, 12]
    assert [chunk.nbytes for chunk in chunks] == [4, 4, 4, 3]
    joined = b"".join(bytes(part) for chunk in chunks for part in chunk.parts)
    assert joined == b"".join(bytes(buffer) for buffer in buffers)


def test_tensor_bytes_of_bfloat16_is_raw_memory():
    tensor = torch.arange(6, dtype=torch.bfloat16).reshape(1, 2, 3)
    view = tensor_bytes(tensor)
    assert view.nbytes == 12
    restored = torch.frombuffer(bytearray(view), dtype=torch.bfloat16).reshape(1, 2, 3)
    assert torch.equal(restored, tensor)
