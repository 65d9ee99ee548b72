"""The synthetic sparse-coding world where the true features are known: dictionary, code sampler, batch streams."""
