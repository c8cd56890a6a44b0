"""The simulator's cost model: what one prefill or decode replica costs in time.

A calibration file is JSON with these keys (units in the names):

- prefill_tokens_per_second: prompt tokens one prefill replica runs per second;
- decode_step_seconds: [[batch size, seconds per step], ...], linearly
  interpolated between points and extrapolated from the last two;
- max_batch_size: running requests per decode replica;
- startup_seconds: from creating a replica to its first request;
- kv_transfer_bytes_per_second and kv_bytes_per_token: the KV transfer cost;
- source and command: free text saying where the numbers come from.

`disagg_operator.simulate.calibrate` writes such a file from measurements.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

REQUIRED_NUMBERS = (
    "prefill_tokens_per_second",
    "startup_seconds",
    "kv_transfer_bytes_per_second",
    "kv_bytes_per_token",
)


class CalibrationError(Exception):
    """A calibration file is missing, unreadable or has an invalid value."""


@dataclass(frozen=True)
class Calibration:
    prefill_tokens_per_second: float
    # (batch size, seconds) points sorted by batch size.
    decode_step_seconds: tuple[tuple[int, float], ...]
    max_batch_size: int
    startup_seconds: float
    kv_transfer_bytes_per_second: float
    kv_bytes_per_token: float
    source: str = ""

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_second

    def kv_transfer_seconds(self, prompt_tokens: int) -> float:
        return prompt_tokens * self.kv_bytes_per_token / self.kv_transfer_bytes_per_second

    def step_seconds(self, batch_size: int) -> float:
        """Return one decode step's time at `batch_size`, interpolated linearly."""
        points = self.decode_step_seconds
        if len(points) == 1:
            return points[0][1]
        sizes = [size for size, _ in points]
        index = bisect.bisect_left(sizes, batch_size)
        index = min(max(index, 1), len(points) - 1)
        (low_size, low_seconds), (high_size, high_seconds) = points[index - 1], points[index]
        slope = (high_seconds - low_seconds) / (high_size - low_size)
        # Extrapolation below the first point never goes under the fastest measured step.
        fastest = min(seconds for _, seconds in points)
        return max(low_seconds + slope * (batch_size - low_size), fastest)

    def batch_for_step_seconds(self, seconds: float) -> int:
        """Return the largest batch, up to max_batch_size, whose step takes at most `seconds`."""
        best = 1
        for batch_size in range(1, self.max_batch_size + 1):
            if self.step_seconds(batch_size) <= seconds:
                best = batch_size
        return best


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CalibrationError(
            f"cannot read calibration {path}: {error.strerror or error}"
        ) from error
    except ValueError as error:
        raise CalibrationError(f"calibration {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration {path} must be a JSON object")
    return calibration_from_dict(data, str(path))


def calibration_from_dict(data: dict, origin: str = "calibration") -> Calibration:
    """Build a Calibration from parsed JSON, naming the first invalid key."""
    numbers = {}
    for key in REQUIRED_NUMBERS:
        numbers[key] = _positive_number(data, key, origin, allow_zero=key == "startup_seconds")

    points = data.get("decode_step_seconds")
    if not isinstance(points, list) or not points:
        raise CalibrationError(
            f"{origin}: decode_step_seconds must be a non-empty list of [batch size, seconds]"
        )
    parsed = []
    for point in points:
        if (
            not isinstance(point, list | tuple)
            or len(point) != 2
            or not all(isinstance(v, int | float) and v > 0 for v in point)
        ):
            raise CalibrationError(
                f"{origin}: invalid decode_step_seconds point {point!r}: "
                "expected [batch size, seconds], both above 0"
            )
        parsed.append((int(point[0]), float(point[1])))
    parsed.sort()

    if len({size for size, _ in parsed}) != len(parsed):
        raise CalibrationError(f"{origin}: decode_step_seconds repeats a batch size")

    max_batch = data.get("max_batch_size", parsed[-1][0])
    if not isinstance(max_batch, int) or max_batch < 1:
        raise CalibrationError(f"{origin}: invalid max_batch_size {max_batch!r}: must be 1 or more")
    return Calibration(
        decode_step_seconds=tuple(parsed),
        max_batch_size=max_batch,
        source=str(data.get("source", "")),
        **numbers,
    )


def _positive_number(data: dict, key: str, origin: str, allow_zero: bool = False) -> float:
    value = data.get(key)
    if value is None:
        raise CalibrationError(f"{origin}: missing key {key}")
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "above 0"
        raise CalibrationError(f"{origin}: invalid {key} {value!r}: must be a number {bound}")
    return float(value)
