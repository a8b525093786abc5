"""The little the driver itself asks of the Kubernetes API (the sidecars do the rest)."""
