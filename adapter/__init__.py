"""wva-adapter: SLO-aware replica recommendations for vLLM variants, served to KEDA and HPA."""

__version__ = "0.1.0"
