"""Utilities for tests and the offline demo: tiny local models, the `transformers serve` launcher."""
