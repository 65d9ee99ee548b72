"""Encoders: hidden units (UNITS), the two-layer network, the small CNN."""
