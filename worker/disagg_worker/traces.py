"""Request-trace readers shared by `disagg replay` and `disagg simulate`.

A trace is a list of `TraceRequest`: when a request arrives (seconds after
the first one) and how many prompt and output tokens it has. Two public
formats are read:

- azure: the Azure LLM inference trace CSV (columns `TIMESTAMP`,
  `ContextTokens`, `GeneratedTokens`; timestamps like
  `2023-11-16 18:15:46.6805900`).
- mooncake: the Mooncake trace JSONL (one object a line with `timestamp` in
  milliseconds, `input_length`, `output_length`; other keys are ignored).

Malformed rows are skipped and counted in `Trace.skipped`, with the first
one's line number in `Trace.first_skipped_line`, so a caller can report them
once instead of failing on row 12,000 of a long file.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import NormalDist

logger = logging.getLogger(__name__)

FORMATS = ("azure", "mooncake")


class TraceError(Exception):
    """The trace file cannot be read at all (missing, unreadable, wrong format)."""


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace."""

    # Seconds after the first request of the trace.
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass
class Trace:
    """Requests in arrival order, plus the count of malformed rows skipped."""

    requests: list[TraceRequest] = field(default_factory=list)
    skipped: int = 0
    # 1-based line number of the first skipped row; None when none was skipped.
    first_skipped_line: int | None = None

    def skip(self, line_number: int) -> None:
        self.skipped += 1
        if self.first_skipped_line is None:
            self.first_skipped_line = line_number


def detect_format(path: Path) -> str:
    """Guess the format from the file suffix: .csv is azure, .jsonl/.json is mooncake."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "azure"
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    raise TraceError(
        f"cannot tell the format of trace {path} from its suffix {suffix!r}; "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


def read_trace(path: str | Path, trace_format: str | None = None) -> Trace:
    """Read a trace file in `trace_format` (guessed from the suffix when None)."""
    path = Path(path)
    trace_format = trace_format or detect_format(path)
    if trace_format not in FORMATS:
        raise TraceError(
            f"unknown trace format {trace_format!r}; expected one of {', '.join(FORMATS)}"
        )
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = _read_azure if trace_format == "azure" else _read_mooncake
            trace = reader(stream, path)
    except OSError as error:
        raise TraceError(f"cannot read trace {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise TraceError(f"cannot read trace {path}: not UTF-8 text ({error.reason})") from error
    if not trace.requests:
        raise TraceError(
            f"trace {path} has no valid {trace_format} rows "
            f"({trace.skipped} malformed, first on line {trace.first_skipped_line})"
        )
    trace.requests.sort(key=lambda request: request.arrival_s)
    logger.info(
        "read trace path=%s format=%s requests=%d skipped=%d",
        path,
        trace_format,
        len(trace.requests),
        trace.skipped,
    )
    return trace


def _read_azure(stream, path: Path) -> Trace:
    reader = csv.reader(stream)
    header = next(reader, None)
    expected = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    if header is None or [column.strip() for column in header[:3]] != expected:
        raise TraceError(
            f"trace {path} is not an azure CSV: expected header {','.join(expected)}, "
            f"found {','.join(header or [])!r}"
        )
    trace = Trace()
    first_time: datetime | None = None
    # The header is line 1, so data rows start on line 2.
    for line_number, row in enumerate(reader, start=2):
        try:
            timestamp = _parse_azure_time(row[0])
            prompt_tokens = _positive_int(row[1])
            output_tokens = _positive_int(row[2])
        except (IndexError, ValueError):
            trace.skip(line_number)
            continue
        if first_time is None:
            first_time = timestamp
        arrival_s = (timestamp - first_time).total_seconds()
        trace.requests.append(TraceRequest(arrival_s, prompt_tokens, output_tokens))
    _shift_to_zero(trace)
    return trace


def _parse_azure_time(text: str) -> datetime:
    # The trace has 7 fractional digits (100 ns); datetime takes at most 6.
    text = text.strip()
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    return datetime.fromisoformat(text)


def _read_mooncake(stream, path: Path) -> Trace:
    trace = Trace()
    for line_number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            arrival_s = float(row["timestamp"]) / 1000.0
            if not math.isfinite(arrival_s):
                raise ValueError("timestamp is not finite")
            prompt_tokens = _positive_int(row["input_length"])
            output_tokens = _positive_int(row["output_length"])
        except (ValueError, KeyError, TypeError):
            trace.skip(line_number)
            continue
        trace.requests.append(TraceRequest(arrival_s, prompt_tokens, output_tokens))
    _shift_to_zero(trace)
    return trace


def _shift_to_zero(trace: Trace) -> None:
    if not trace.requests:
        return
    start = min(request.arrival_s for request in trace.requests)
    trace.requests = [
        TraceRequest(request.arrival_s - start, request.prompt_tokens, request.output_tokens)
        for request in trace.requests
    ]


def _positive_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a token count, got {value!r}")
    number = int(str(value).strip())
    if number < 1:
        raise ValueError(f"token count must be at least 1, got {number}")
    return number


# ---------------------------------------------------------------------------
# Synthetic workload.

# Published statistics of the Azure LLM inference conversation trace (2023):
# quantile -> tokens, and the mean arrival rate over its 58.4 minutes.
AZURE_CONV_PROMPT_QUANTILES = {0.50: 1020, 0.90: 2734, 0.99: 4142}
AZURE_CONV_OUTPUT_QUANTILES = {0.50: 129, 0.90: 424, 0.99: 601}
AZURE_CONV_RATE_PER_S = 5.5


def fit_lognormal(quantiles: dict[float, float]) -> tuple[float, float]:
    """Fit (mu, sigma) of a lognormal to quantiles by least squares in log space.

    ln(q_p) = mu + sigma * z_p for a lognormal, so this is a straight-line
    fit of ln(q_p) against the standard normal quantile z_p.
    """
    points = [(NormalDist().inv_cdf(p), math.log(q)) for p, q in quantiles.items()]
    mean_z = sum(z for z, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    covariance = sum((z - mean_z) * (y - mean_y) for z, y in points)
    variance = sum((z - mean_z) ** 2 for z, _ in points)
    sigma = covariance / variance
    mu = mean_y - sigma * mean_z
    return mu, sigma


def synthetic_trace(
    count: int,
    seed: int = 0,
    rate_per_s: float = AZURE_CONV_RATE_PER_S,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Trace:
    """Build a trace shaped like the Azure conversation trace.

    Arrivals are Poisson at `rate_per_s`; prompt and output lengths are drawn
    from lognormals fitted to the published p50/p90/p99. A lognormal has a
    heavier far tail than the real trace, so lengths are clipped to the given
    maxima (and to at least 1 token).
    """
    generator = random.Random(seed)
    prompt_mu, prompt_sigma = fit_lognormal(AZURE_CONV_PROMPT_QUANTILES)
    output_mu, output_sigma = fit_lognormal(AZURE_CONV_OUTPUT_QUANTILES)
    trace = Trace()
    arrival_s = 0.0
    for index in range(count):
        if index > 0:
            arrival_s += generator.expovariate(rate_per_s)
        prompt_tokens = round(generator.lognormvariate(prompt_mu, prompt_sigma))
        output_tokens = round(generator.lognormvariate(output_mu, output_sigma))
        if max_prompt_tokens is not None:
            prompt_tokens = min(prompt_tokens, max_prompt_tokens)
        if max_output_tokens is not None:
            output_tokens = min(output_tokens, max_output_tokens)
        trace.requests.append(TraceRequest(arrival_s, max(1, prompt_tokens), max(1, output_tokens)))
    return trace
