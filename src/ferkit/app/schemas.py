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
    preview: str | None = Field(
        default=None, description="with ?preview=true: the image as read (upright), a JPEG data URL"
    )


class HealthOut(BaseModel):
    status: str = "ok"
    model: str = Field(description="the model's internal name")
    model_title: str = Field(description="a human name for the model")
    model_accuracy: str | None = Field(
        default=None, description="its measured accuracy, from the bundled model card (None: not known)"
    )
    classes: list[str]
    detector: str = Field(description="face detector in use")
    detector_title: str = Field(description="a human name for the detector")
    margin: float
    max_upload_mb: float
    max_video_mb: float
    max_video_seconds: float
    live: bool = Field(description="whether the live-camera WebSocket is available (needs 'websockets')")


class ErrorOut(BaseModel):
    detail: str


class TrackOut(BaseModel):
    track: int = Field(description="id of the face track (the same face followed over time)")
    first: float = Field(description="seconds: first time the face was seen")
    last: float = Field(description="seconds: last time the face was seen")
    frames: int = Field(description="analysed frames the face was seen in")
    label: str = Field(description="most probable expression, averaged over the track")
    score: float = Field(description="its mean probability")
    probs: dict[str, float] = Field(description="mean probability of each class over the track")


class VideoFrameOut(BaseModel):
    frame: int
    time: float = Field(description="seconds from the start")
    faces: list[FaceOut] = Field(description="faces in this frame, smoothed over time, with their track")


class VideoOut(BaseModel):
    video_url: str = Field(description="the annotated video (VP8 WebM), kept for a while on the server")
    width: int
    height: int
    fps: float
    duration: float = Field(description="seconds")
    frames: int = Field(description="frames in the video")
    every: int = Field(description="every n-th frame was analysed")
    model: str
    ms: float = Field(description="server time for the whole video")
    tracks: list[TrackOut] = Field(description="one summary per face track, in order of appearance")
    timeline: list[VideoFrameOut] = Field(description="the analysed frames")


class VideoEvent(BaseModel):
    """One line of ``POST /api/video``'s response (newline-delimited JSON)."""

    stage: str = Field(description="'progress', then 'done' (with result) or 'error' (with detail)")
    frame: int = 0
    frames: int = Field(default=0, description="frames in the video (0: unknown)")
    progress: float = Field(default=0.0, description="0 to 1")
    result: VideoOut | None = None
    detail: str | None = None
