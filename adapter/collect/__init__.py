"""The edges that read the live system: Kubernetes objects and vLLM metrics."""
