"""Backends: pure translations of a resolved profile into one backend's spawner settings."""
