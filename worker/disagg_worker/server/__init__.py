"""gRPC side of the data plane: the services of prefill, decode and aggregated replicas.

- `app`: `create_server()` and `serve()`, which assemble a replica of one role.
- `prefill_service`, `decode_service`, `worker_service`: the rpc handlers.
- `kv_transfer`: the KV cache receiver (decode side) and sender (prefill side).
"""
