"""Reading results: plots, export, rank correlation across runs, the peer-library cross-check."""
