"""Training loops: the optimiser and loss log, the adversarial training step, pre-training (supervised or
contrastive, clean or adversarial), stacked pre-training of many runs, and downstream heads (SLF / ALF)."""
