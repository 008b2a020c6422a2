"""vLLM emulation: the metric families real vLLM exports, served on /metrics."""

from adapter.emulator.metrics import ITL_METRIC_NAMES, MetricsServer, VllmMetrics

__all__ = ["ITL_METRIC_NAMES", "MetricsServer", "VllmMetrics"]
