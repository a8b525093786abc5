"""Persisted volume records: the only writer of the driver's state on disk."""
