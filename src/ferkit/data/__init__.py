"""Datasets: FER2013 (CSV and folders), generic class folders, AffectNet, caching, auditing.

``load_dataset(path)`` is the entry point; it imports the loader it needs when called.
"""

from ferkit.data.dataset import SPLITS, FaceDataset
from ferkit.data.load import load_dataset

__all__ = ["SPLITS", "FaceDataset", "load_dataset"]
