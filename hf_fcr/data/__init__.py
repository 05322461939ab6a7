"""Offline data and small models: real images shipped inside installed packages (scikit-learn's digits)."""

from .digits import digits_cnn, digits_dataset, train_classifier

__all__ = ["digits_cnn", "digits_dataset", "train_classifier"]
