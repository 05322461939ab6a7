"""Head-level fitting: the sharded logistic regression (logistic), M' and Algorithm 2's choice of weights (probe),
DFR and class-balanced retraining (retrain), and the registry of head-level methods (methods)."""
