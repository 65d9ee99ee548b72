"""Losses as pure tensor functions, and their closed-form logit and input gradients."""
