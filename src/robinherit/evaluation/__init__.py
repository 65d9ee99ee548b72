"""Measurements of a trained model: robust accuracy with self-checks, certified bounds, purity, learned dictionaries."""
