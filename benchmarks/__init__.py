"""Benchmarks of robinherit's hot paths (not part of the package; run with ``python -m benchmarks.<name>``)."""
