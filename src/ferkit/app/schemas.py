"""Pydantic request/response schemas of the web API (they also document ``/docs``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FaceOut(BaseModel):
    box: list[int] = Field(description="detector box [x, y, width, height] in image pixels")
    crop_box: list[int] = Field(
        description="square box the face was cropped from (may extend past the image)"
    )
    label: str = Field(description="most probable expression")
    score: float = Field(description="its probability")
    probs: dict[str, float] = Field(description="probability of each of the seven classes, in class order")
    track: int | None = Field(default=None, description="live stream only: id of the face track")


class PredictOut(BaseModel):
    faces: list[FaceOut] = Field(description="faces found, left to right; empty when there are none")
    width: int
    height: int
    model: str
    warnings: list[str] = Field(
        default=[],
        description="things worth knowing about the image, e.g. EXIF orientation unreadable and not applied",
    )
    ms: float = Field(description="server time spent decoding, detecting and classifying")


class HealthOut(BaseModel):
    status: str = "ok"
    model: str
    classes: list[str]
    detector: str
    margin: float
    max_upload_mb: float
    live: bool = Field(description="whether the live-camera WebSocket is available (needs 'websockets')")


class ErrorOut(BaseModel):
    detail: str
