"""Leakage audit: how much of a test set the training set already contains.

Two counts per test set:

- ``exact``: test images whose pixels are identical to a training image (BLAKE2b hashes, as in
  ``ferkit.data.audit``).
- ``near``: the other test images that have a training image closer (L2 in pixel space) than the
  closest pair of distinct images *within the original test set* — closer than any two genuinely
  different test faces are to each other. The original test set is given as ``reference`` (the real,
  non-synthetic test images; by default the test set itself), de-duplicated before its closest pair is
  taken, so FER2013's own pixel-identical copies do not make the threshold zero.

Distances are computed in float32 batches (``|a|^2 + |b|^2 - 2ab`` on centred pixels, in chunks), and each
nearest distance is then recomputed exactly in float64, so ties at tiny distances are not rounding noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ferkit.data.audit import image_hashes

LEAKY = "LEAKY"  # the label reports and the CLI put on every number measured under the study protocol


def _flat(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images).reshape(len(images), -1)).float() - 128.0


def nearest_distances(
    queries: np.ndarray,
    pool: np.ndarray,
    exclude_self: bool = False,
    chunk_q: int = 1024,
    chunk_p: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the L2 distance (pixel units) to its nearest ``pool`` image and its index.

    ``exclude_self``: queries and pool are the same set; a row is not its own neighbour.
    """
    if len(pool) == 0 or len(queries) == 0:
        return np.full(len(queries), np.inf), np.full(len(queries), -1, np.int64)
    q_all, p_all = _flat(queries), _flat(pool)
    p_sq = (p_all * p_all).sum(1)
    best_d = torch.full((len(q_all),), float("inf"))
    best_i = torch.full((len(q_all),), -1, dtype=torch.long)
    for i in range(0, len(q_all), chunk_q):
        q = q_all[i : i + chunk_q]
        q_sq = (q * q).sum(1, keepdim=True)
        for j in range(0, len(p_all), chunk_p):
            d2 = q_sq + p_sq[j : j + chunk_p] - 2.0 * (q @ p_all[j : j + chunk_p].T)
            if exclude_self:
                r = torch.arange(i, i + len(q))
                inside = (r >= j) & (r < j + chunk_p)
                d2[inside.nonzero().flatten(), (r[inside] - j)] = float("inf")
            m, a = d2.min(1)
            better = m < best_d[i : i + len(q)]
            best_d[i : i + len(q)][better] = m[better]
            best_i[i : i + len(q)][better] = a[better] + j
    # Exact distance to the chosen neighbour (float64), instead of the float32 expansion.
    diff = q_all.double() - p_all[best_i].double()
    return diff.norm(dim=1).numpy(), best_i.numpy()


def closest_pair_distance(images: np.ndarray) -> float:
    """The smallest L2 distance between two pixel-distinct images of ``images`` (inf if fewer than two)."""

    _, first = np.unique(image_hashes(images), return_index=True)
    distinct = images[np.sort(first)]
    if len(distinct) < 2:
        return float("inf")
    d, _ = nearest_distances(distinct, distinct, exclude_self=True)
    return float(d.min())


def audit_leakage(
    train_images: np.ndarray,
    test_images: np.ndarray,
    reference: np.ndarray | None = None,
    leaky: bool = False,
    hashes: tuple[np.ndarray, np.ndarray] | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """Exact and near copies of test images in the training set (JSON-ready).

    ``reference``: the original test images the threshold comes from (default: ``test_images``).
    ``leaky``: the numbers come from the study's resample-then-split protocol and are labelled so.
    ``hashes``: ``image_hashes`` of (train_images, test_images) when the caller has them already.
    ``facts``: extra JSON-ready fields to record (protocol, method, seed...).
    """

    n = len(test_images)
    if hashes is None:
        hashes = (image_hashes(train_images), image_hashes(test_images))
    train_h, test_h = hashes
    exact = np.isin(test_h, train_h)
    threshold = closest_pair_distance(test_images if reference is None else reference)
    dist, _ = nearest_distances(test_images, train_images)
    near = (~exact) & (dist < threshold)
    _, within_idx = np.unique(test_h, return_index=True)
    uniq = test_images[np.sort(within_idx)]
    within, _ = nearest_distances(uniq, uniq, exclude_self=True) if len(uniq) > 1 else (np.zeros(0), None)
    out: dict[str, Any] = {
        "label": LEAKY if leaky else "official",
        "test_images": int(n),
        "train_images": len(train_images),
        "exact": int(exact.sum()),
        "near": int(near.sum()),
        "exact_or_near": int((exact | near).sum()),
        "exact_fraction": round(float(exact.mean()), 4) if n else 0.0,
        "exact_or_near_fraction": round(float((exact | near).mean()), 4) if n else 0.0,
        "threshold_l2": round(threshold, 3),
        "threshold_from": "closest pair of distinct images within the original test set",
        "median_nearest_train_l2": round(float(np.median(dist)), 2) if n else None,
        "median_nearest_within_test_l2": round(float(np.median(within)), 2) if len(within) else None,
        **facts,
    }
    return out


def format_leakage(report: dict[str, Any]) -> str:
    """One line for the CLI, labelled LEAKY when it comes from the study protocol."""
    tag = f"[{report['label']}] " if report.get("label") == LEAKY else ""
    prov = report.get("provenance") or {}
    smote = (
        f"; {prov['smote_neighbour']} more are SMOTE parents or children of a training image"
        if prov.get("smote_neighbour")
        else ""
    )
    return (
        f"{tag}{report['exact']} of {report['test_images']} test images "
        f"are exact copies of a training image, "
        f"{report['near']} more have a training image closer than the closest pair within the original "
        f"test set (L2 < {report['threshold_l2']:.1f}){smote}"
    )
