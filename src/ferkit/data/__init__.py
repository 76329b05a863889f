"""Datasets: FER2013 (CSV and folders), generic class folders, AffectNet, caching, augmentation, balance."""
from ferkit.data.dataset import SPLITS, FaceDataset

__all__ = ["SPLITS", "FaceDataset"]
