"""Metrics: classification, robustness, image quality, privacy."""
