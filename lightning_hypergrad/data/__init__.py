"""Datasets and datamodules; the embedded default is scikit-learn's digits."""
