"""Where the detection loop's results go: the --output video, --json lines, the window, the summary.

    with Outputs(video_path, json_path, fps) as outputs, Window(title, enabled, show_fps) as window:
        stats = loop.run(frames, processors, Presenter(outputs, window))
    print(Summary(title, stats).line())

Outputs go through utils.common.fileio.atomic_path, so a failed run leaves nothing under the final
names; a stop by 'q' or Ctrl-C is a clean stop: what was processed is kept and the video is playable.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.errors import UserError
from utils.common.fileio import atomic_path, is_stream_path
from utils.common.signals import stdout_closed
from utils.runtime import detector as detector_utils
from utils.runtime.loop import FrameResult, RunStats

VIDEO_FOURCC = config.VIDEO_FOURCC
MIN_VIDEO_SIDE = 2  # OpenCV's video writers open no 1xN or Nx1 video (mp4v in .mp4/.avi/.mov/.mkv)


class Outputs:
    """--output video and --json lines, each under a temporary name until the run ends well.

    The video writer opens on the first frame (its size); later frames of another size (images of
    mixed sizes) are resized to it. If no frame came, neither is written (warned): an earlier output is
    never replaced by an empty one. This is the one place that writes them, so it is where a full disk
    becomes a one-line error (the temporaries removed, earlier outputs kept) and a --json reader that went
    away (`--json - | head -1`) a quiet stop: `write` returns False and `stopped_by` says why.
    """

    def __init__(self, video_path: Path | None, json_path: Path | None, fps: float,
                 warn: Callable[[str], None] = lambda message: None):
        self.video_path, self.json_path, self.fps, self.warn = video_path, json_path, fps, warn
        self._video_stack = contextlib.ExitStack()
        self._json_stack = contextlib.ExitStack()
        self._video_tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._json = None
        self.frames = 0
        self.stopped_by: str | None = None  # why writing ended before the frames did

    def __enter__(self) -> "Outputs":
        try:
            if self.video_path is not None:
                self._video_tmp = self._video_stack.enter_context(
                    atomic_path(self.video_path, suffix=self.video_path.suffix))  # OpenCV needs the extension
                # Registered after atomic_path, so it runs first: the file is complete when moved.
                self._video_stack.callback(self._release_writer)
            if self.json_path is not None and str(self.json_path) == "-":
                self._json = sys.stdout
            elif self.json_path is not None and is_stream_path(self.json_path):
                # Append: truncating /dev/stdout would clobber what a redirected stdout already holds.
                self._json = self._json_stack.enter_context(open(self.json_path, "a", encoding="utf-8"))
            elif self.json_path is not None:
                tmp = self._json_stack.enter_context(atomic_path(self.json_path))
                self._json = self._json_stack.enter_context(open(tmp, "w", encoding="utf-8"))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._flush_json()  # a full disk shows here at the latest
            except UserError:
                self._close(*sys.exc_info())
                raise
            if self.frames == 0:
                for path in (self.video_path, self.json_path):
                    if path is not None and not is_stream_path(path):
                        self.warn(f"{path}: no frame was processed, so it was not written")
                try:
                    raise _NoVideo
                except _NoVideo:  # makes atomic_path discard the temporaries
                    self._close(*sys.exc_info())
                return
        self._close(exc_type, exc, tb)

    def _close(self, exc_type, exc, tb) -> None:
        try:
            self._json_stack.__exit__(exc_type, exc, tb)
        finally:
            self._video_stack.__exit__(exc_type, exc, tb)

    def _json_failed(self, exc: OSError) -> bool:
        """A --json write failed: False when its reader went away (stop quietly), else a UserError."""
        # Nothing more goes to it, and what its buffer still holds is dropped (no second error on closing).
        if self._json is sys.stdout:
            stdout_closed()
        else:
            with contextlib.suppress(OSError):
                self._json.close()
        self._json = None
        if isinstance(exc, BrokenPipeError) and is_stream_path(self.json_path):
            self.stopped_by = "--json reader closed the pipe"
            return False
        raise UserError(f"{self.json_path}: writing --json failed ({exc.strerror or exc}); free some space or "
                        "choose another --json (an earlier file there is kept)") from exc

    def _flush_json(self) -> None:
        if self._json is not None:
            try:
                self._json.flush()
            except OSError as exc:
                self._json_failed(exc)

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file is playable

    def write(self, result: FrameResult) -> bool:
        """Write one frame; False when the --json reader went away (the run should stop)."""
        if self._json is not None:
            try:
                self._json.write(json.dumps(result.record, separators=(",", ":")) + "\n")
                if is_stream_path(self.json_path):
                    self._json.flush()  # a pipe's reader sees each frame as it comes
            except OSError as exc:
                return self._json_failed(exc)
        if self._video_tmp is not None:
            import cv2

            image = result.image
            if self._writer is None:
                self._size = (image.shape[1], image.shape[0])
                if min(self._size) < MIN_VIDEO_SIDE:  # OpenCV's writers refuse 1-pixel frames whatever the name
                    raise UserError(f"{self.video_path}: frames of {self._size[0]}x{self._size[1]} pixels are "
                                    f"too small for a video (at least {MIN_VIDEO_SIDE}x{MIN_VIDEO_SIDE}); "
                                    f"scale them up with --output-size (e.g. --output-size 64)")
                self._writer = cv2.VideoWriter(str(self._video_tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC),
                                               self.fps, self._size)
                if not self._writer.isOpened():
                    hint = "" if self.video_path.suffix.lower() == ".mp4" else "; try a .mp4 name"
                    raise UserError(f"{self.video_path}: OpenCV cannot write a {VIDEO_FOURCC} video of "
                                    f"{self._size[0]}x{self._size[1]} frames here{hint}")
            if (image.shape[1], image.shape[0]) != self._size:
                image = cv2.resize(image, self._size)
            self._writer.write(image)
        self.frames += 1
        return True


class _NoVideo(Exception):
    """Internal: makes atomic_path discard the outputs of a run without frames."""


class DisplayError(UserError):
    """--display 1 where there is no screen."""


def check_display() -> None:
    """Refuse --display 1 without a screen before Qt would abort the whole process."""
    if not sys.platform.startswith("linux") or os.environ.get("WAYLAND_DISPLAY"):
        return
    display = os.environ.get("DISPLAY", "")
    if not display:
        raise DisplayError("--display 1 needs a screen but DISPLAY is not set; use --display 0 (headless), "
                           "or run it on a desktop or under Xvfb")
    local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if local and not Path(f"/tmp/.X11-unix/X{local.group(1)}").exists():
        raise DisplayError(f"--display 1: no X server is running on DISPLAY={display}; use --display 0 "
                           f"(headless) or start one")


LINGER_REDRAW_SECONDS = 0.5


class Window:
    """The OpenCV HighGUI window (main thread only). Does nothing at all when disabled."""

    def __init__(self, title: str, enabled: bool, show_fps: bool):
        self.title, self.enabled, self.show_fps = title, enabled, show_fps
        self._shown = False
        self._seen_visible = False
        self._last: np.ndarray | None = None

    def __enter__(self) -> "Window":
        if self.enabled:
            import cv2

            check_display()
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            import cv2

            cv2.destroyAllWindows()
            cv2.waitKey(1)  # lets the GUI actually close the window

    def _keep_going(self) -> bool:
        import cv2

        if cv2.waitKey(1) & 0xFF == ord("q"):
            return False
        # The user closed the window with its close button. A new window is not visible until the
        # GUI has mapped it, so only a window once seen visible counts as closed.
        visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        self._seen_visible = self._seen_visible or visible
        return visible or not self._seen_visible

    def show(self, image: np.ndarray, fps: float) -> bool:
        """Show a frame; False when the user asked to quit."""
        if not self.enabled:
            return True
        import cv2

        if self.show_fps:
            image = image.copy()  # the FPS text stays off --output
            detector_utils.draw_fps_on_image(f"FPS : {int(fps)}", image)
        if not self._shown:  # start at the frame's own size (a WINDOW_NORMAL window may be resized later)
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
        cv2.imshow(self.title, image)
        self._shown, self._last = True, image
        return self._keep_going()

    def linger(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Keep the last frame on screen for `seconds` (or until 'q', or `stop`: Ctrl-C)."""
        if not (self.enabled and self._shown):
            return
        import cv2

        end = time.monotonic() + seconds
        shown_at = 0.0
        while time.monotonic() < end and self._keep_going() and not (stop is not None and stop.is_set()):
            # A short run can end before the GUI has mapped its window, and a frame shown before that may
            # never be painted: show the last one again now and then.
            if time.monotonic() - shown_at > LINGER_REDRAW_SECONDS:
                cv2.imshow(self.title, self._last)
                shown_at = time.monotonic()
            time.sleep(0.01)


class Presenter:
    """The loop's `present`: write the result and show it (with the running FPS); False on 'q'."""

    def __init__(self, outputs: Outputs | None, window: Window | None):
        self.outputs, self.window = outputs, window
        self.start = time.perf_counter()
        self.frames = 0

    def __call__(self, result: FrameResult) -> bool:
        self.frames += 1
        if self.outputs is not None and not self.outputs.write(result):
            return False
        if self.window is not None:
            return self.window.show(result.image, self.frames / max(time.perf_counter() - self.start, 1e-9))
        return True


@dataclass
class Summary:
    """The line a detector prints at the end."""

    title: str
    stats: RunStats
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        s = self.stats
        text = (f"{self.title}: {s.frames} frames in {s.seconds:.2f} s = {s.fps:.1f} FPS; "
                f"{s.frames_with_boxes} with hands; skipped {s.skipped} corrupt frame(s)")
        if s.dropped:
            text += f"; dropped {s.dropped} stale live frame(s)"
        return f"{text}; stopped by {s.stopped_by}" + "".join(f"; {d}" for d in self.details)
