"""Encoders: hidden units (UNITS), the two-layer network and a stack of them, the small CNN."""
