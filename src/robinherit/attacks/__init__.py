"""Input-space attacks: PGD and FGM as pure functions (for one model or a stack of models), and AutoAttack's
components."""
