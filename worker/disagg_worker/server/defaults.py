"""Default limits of the KV transfer, in a module light enough for the CLI parser to import."""

# Payload bytes per KV chunk message. With `disagg bench kv-transfer`, 512 KiB
# chunks cost the sender about half the CPU per byte of 1 MiB chunks, likely
# because both copies of a chunk stay in the CPU cache. Chunks of 4 MiB or
# more were slower. docs/benchmarks.md records the sizes tried.
DEFAULT_CHUNK_BYTES = 512 << 10
# Largest gRPC message either end of a KV transfer accepts.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
# Seconds a KV transfer may take before the prefill replica gives up.
DEFAULT_TIMEOUT_SECONDS = 30.0
