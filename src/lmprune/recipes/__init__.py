"""Workflows that tie models, data, pruners, export and evaluation together (one per file)."""
