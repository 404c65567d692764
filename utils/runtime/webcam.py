"""The original's WebcamVideoStream, on imutils' class: a camera read on its own thread, only the newest
frame kept (no lag builds up). Imported on first use (imutils loads OpenCV), see utils.runtime.detector.

Added to imutils' class: the capture size, an error when the camera does not open, a frame index
(`read_indexed`: a caller can tell a new frame from one it has seen), an end when the camera stops
delivering (imutils' loop would spin on failed reads), and a `stop()` that waits for the thread and
releases the camera.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
from imutils.video import WebcamVideoStream as ImutilsWebcamVideoStream

from utils.common import config
from utils.runtime.sources import SourceError

STOP_JOIN_SECONDS = 2.0


class WebcamVideoStream(ImutilsWebcamVideoStream):
    def __init__(self, src: int | str = 0, width: int = config.DEFAULT_WIDTH, height: int = config.DEFAULT_HEIGHT,
                 name: str = "camera-reader"):
        super().__init__(src, name)  # opens the camera and reads a first frame
        if not self.stream.isOpened():
            raise SourceError(f"camera {src!r}: cannot open it; check the index and that no other program "
                              f"uses it")
        self.stream.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self.stream.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.grabbed and self.frame.shape[1::-1] != tuple(int(v) for v in self.size()):
            self.grabbed, self.frame = self.stream.read()  # the camera changed size: a first frame at it
        self.frame_index = 0 if self.grabbed else -1
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "WebcamVideoStream":
        self._thread = threading.Thread(target=self.update, name=self.name, daemon=True)
        self._thread.start()
        return self

    def update(self) -> None:
        while not self.stopped:
            grabbed, frame = self.stream.read()
            with self._lock:
                self.grabbed = grabbed
                if grabbed:
                    self.frame, self.frame_index = frame, self.frame_index + 1
                else:
                    self.frame, self.stopped = None, True

    def read(self) -> np.ndarray | None:
        """The newest frame, None once the camera stopped delivering."""
        with self._lock:
            return self.frame if self.grabbed else None

    def read_indexed(self) -> tuple[int, np.ndarray | None]:
        """(index, frame): the index tells a caller whether the frame is new."""
        with self._lock:
            return self.frame_index, (self.frame if self.grabbed else None)

    def size(self) -> tuple[float, float]:
        return self.stream.get(cv2.CAP_PROP_FRAME_WIDTH), self.stream.get(cv2.CAP_PROP_FRAME_HEIGHT)

    def stop(self) -> None:
        super().stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_SECONDS)
        self.stream.release()
