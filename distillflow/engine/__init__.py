"""Execution: sources, teacher clients, cache/resume, distilabel steps, outputs.

Heavy libraries (distilabel, datasets, aiohttp) are imported inside functions.
"""
