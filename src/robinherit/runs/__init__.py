"""Running experiments: one run, the scheduler and sweeps, the results store, provenance."""
