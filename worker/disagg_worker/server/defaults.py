"""Default limits of the KV transfer, in a module light enough for the CLI parser to import."""

# Payload bytes per KV chunk message. Chosen with `disagg bench kv-transfer`;
# docs/benchmarks.md records the sizes tried and their throughput.
DEFAULT_CHUNK_BYTES = 1 << 20
# Largest gRPC message either end of a KV transfer accepts.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
# Seconds a KV transfer may take before the prefill replica gives up.
DEFAULT_TIMEOUT_SECONDS = 30.0
