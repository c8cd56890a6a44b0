"""A small calibration with round numbers, shared by the simulator tests."""

from __future__ import annotations

from disagg_operator.simulate.calibration import calibration_from_dict

# Prefill 100 tokens/s; KV transfer 10 bytes/token at 1000 bytes/s, so one
# prompt token costs 0.01 s of prefill and 0.01 s of transfer.
CALIBRATION = calibration_from_dict(
    {
        "prefill_tokens_per_second": 100,
        "decode_step_seconds": [[1, 0.1], [2, 0.15], [4, 0.2]],
        "max_batch_size": 4,
        "startup_seconds": 10,
        "kv_transfer_bytes_per_second": 1000,
        "kv_bytes_per_token": 10,
    }
)
