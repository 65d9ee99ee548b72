"""Losses as pure tensor functions, and their closed-form logit, input and (for a stack) weight gradients."""
