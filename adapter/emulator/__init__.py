"""vLLM emulation: the metric families real vLLM exports, served on /metrics."""

from adapter.emulator.metrics import MetricsServer, VllmMetrics

__all__ = ["MetricsServer", "VllmMetrics"]
