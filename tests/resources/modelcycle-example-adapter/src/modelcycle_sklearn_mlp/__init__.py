"""A scikit-learn MLP as a modelcycle framework adapter."""
