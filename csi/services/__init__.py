"""The three CSI services: thin handlers that validate, lock, delegate and reply."""
