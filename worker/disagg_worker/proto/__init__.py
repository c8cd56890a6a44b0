"""Generated gRPC stubs for proto/disagg/v1/worker.proto (`make proto`)."""
