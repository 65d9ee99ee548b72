"""Input-space attacks: PGD and FGM as pure functions, and AutoAttack's components."""
