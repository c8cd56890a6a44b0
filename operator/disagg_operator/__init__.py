"""disagg control plane: the kopf operator, manifest builders and the scaling policy."""
