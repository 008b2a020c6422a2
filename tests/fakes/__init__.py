"""Test doubles that speak real protocols (HTTP fake Kubernetes API server)."""
