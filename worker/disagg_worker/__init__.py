"""disagg data plane: prefill, decode and aggregated workers, the router, metrics."""

__version__ = "0.1.0"
