"""One training run: the config becomes parts (build), the loops run them (engine) and resume them (resume), the
final weights are scored on every evaluation set (score, finish); experiment.run ties them together."""
