"""The one class order used everywhere, and the maps from dataset folder names to it."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASSES)

# Lower-case folder/class names seen in FER2013, AffectNet, RAF-DB, CK+, ExpW... -> index in CLASSES.
NAME_TO_INDEX: dict[str, int] = {
    "angry": 0,
    "anger": 0,
    "disgust": 1,
    "disgusted": 1,
    "fear": 2,
    "fearful": 2,
    "scared": 2,
    "happy": 3,
    "happiness": 3,
    "joy": 3,
    "sad": 4,
    "sadness": 4,
    "surprise": 5,
    "surprised": 5,
    "neutral": 6,
    "calm": 6,
}
# Classes some datasets have that are not among the seven: dropped (and counted) by loaders.
KNOWN_EXTRA = ("contempt",)


def class_index(name: str, mapping: dict[str, int] | None = None) -> int | None:
    """Index of a class/folder name in CLASSES, or None if it is not one of the seven."""
    key = name.strip().lower()
    if mapping is not None:
        lowered = {k.lower(): v for k, v in mapping.items()}
        if key in lowered:
            return lowered[key]
    if key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    for i, c in enumerate(CLASSES):
        if key == c.lower():
            return i
    return NAME_TO_INDEX.get(key)
