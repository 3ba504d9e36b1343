"""Silhouettes from a static-camera video: reading, background, foreground masks, clean-up, checks.

Pipeline (:func:`extract_silhouettes`):

1. :func:`read_video` decodes every frame with OpenCV (``cv2.VideoCapture``; OpenCV returns a closed
   capture rather than raising for a missing or garbage file, so both are checked explicitly), scaled
   down to at most ``max_height`` rows.
2. A video whose frames are binary (black/white, grey) is a *mask video*: thresholded and used directly.
3. Otherwise a background: an empty-scene image when given; else estimated from the clip
   (:data:`BACKGROUND_METHODS`; the default ``auto`` was chosen by measurement, see docs/identify.md):
   ``auto`` takes the median of the clip's still segment when it starts or ends with one (empty
   lead-in / lead-out frames), else the temporal median of the whole clip; OpenCV's MOG2 and KNN
   subtractors are available too.
4. Foreground = colour distance to the background above a noise-adaptive threshold and above a share
   of the largest distance nearby (codec ringing around the walker is not foreground), then clean-up:
   opening (specks), closing (joins limbs), the largest connected component (plus pieces of the same
   person just above or below it), hole filling.
5. Frames with nobody (too small a silhouette) or a walker cut by the left/right frame border are
   dropped. Several people (a second large component far from the first in many frames) or a moving
   camera (phase correlation finds a global shift between frames, or most of the picture is
   foreground) raise :class:`~lstc_gait.identify.errors.IdentifyError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import IdentifyError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"})
BACKGROUND_METHODS = ("auto", "median", "leadin", "mog2", "knn")


@dataclass
class SilhouetteOptions:
    """Settings of the silhouette extraction (the ``video`` node of the commands' configs).

    Attributes:
        background_method: ``auto`` | ``median`` | ``leadin`` | ``mog2`` | ``knn`` (ignored with an image).
        max_height: frames taller than this are scaled down first (speed, memory); 0 keeps the size.
        max_frames: frames read at most from one video.
        threshold: minimum RGB distance (0..441) of a foreground pixel to the background; raised
            on noisy clips to ``noise_factor`` noise standard deviations.
        local_contrast: a pixel's distance must also reach this share of the largest distance within
            ``local_window`` pixels (rejects the codec's ringing just outside a contrasted walker,
            keeps low-contrast clothing away from such edges).
        local_window: size of that neighbourhood in pixels.
        max_hole: holes inside the silhouette up to this share of its area are filled (larger ones,
            like the gap between the legs closed by the feet, stay open).
        noise_factor: the threshold is at least this many noise standard deviations.
        min_person: smallest silhouette kept, as a share of the frame area.
        drop_border: drop frames where the silhouette touches the left or right border (walker cut).
        multi_person_share: share of frames with a second large person that means "several people".
        moving_share: share of frames mostly foreground that means "the camera moves".
        min_frames: fewer usable frames than this is an error ("nobody walks through").
    """

    background_method: str = "auto"
    max_height: int = 480
    max_frames: int = 3000
    threshold: float = 18.0
    noise_factor: float = 5.0
    local_contrast: float = 0.4
    local_window: int = 7
    max_hole: float = 0.02
    open_px: int = 3
    close_px: int = 3
    piece_min: float = 0.02
    min_person: float = 0.003
    drop_border: bool = True
    multi_person_share: float = 0.3
    moving_share: float = 0.3
    min_frames: int = 5

    @classmethod
    def from_mapping(cls, values) -> SilhouetteOptions:
        """Options from a mapping (OmegaConf node); unknown keys are an error naming them."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise IdentifyError(f"unknown video option(s) {unknown}; known: {sorted(known)}")
        opts = cls(**values)
        if opts.background_method not in BACKGROUND_METHODS:
            raise IdentifyError(f"video.background_method={opts.background_method!r} is not one of "
                                f"{', '.join(BACKGROUND_METHODS)}")
        return opts


@dataclass
class Silhouettes:
    """Silhouettes of one clip.

    Attributes:
        masks: uint8 (N, H, W) 0/255 silhouettes of the kept frames.
        frame_indices: int (N,) index in the video of each kept frame.
        total_frames: frames decoded.
        kind: ``rgb`` (background subtraction) or ``mask`` (a video of binary masks).
        background: how the background was obtained (``image``, ``leadin``, ``median``, ``mog2``, ...).
        dropped: frames dropped per reason (``nobody``, ``border``).
        fps: the video's frame rate (0 when unknown).
        source: the video path.
    """

    masks: np.ndarray
    frame_indices: np.ndarray
    total_frames: int
    kind: str
    background: str
    dropped: dict[str, int] = field(default_factory=dict)
    fps: float = 0.0
    source: str = ""

    def summary(self) -> dict:
        """JSON-friendly description (no arrays)."""
        return {"source": self.source, "kind": self.kind, "background": self.background,
                "total_frames": self.total_frames, "frames_kept": int(len(self.frame_indices)),
                "dropped": dict(self.dropped), "fps": self.fps}


def is_video_file(path: str | os.PathLike) -> bool:
    """True for a file whose extension is a common video container."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block (native libraries' own prints), then restore it."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_video(path: str | os.PathLike, max_height: int = 480, max_frames: int = 3000) -> tuple[np.ndarray, float]:
    """Decode a video into RGB frames.

    Args:
        path: the video file (anything FFmpeg in OpenCV reads: mp4v, MJPG, H.264 in MP4/AVI/MOV/MKV).
        max_height: scale frames down to at most this many rows (0: keep the size).
        max_frames: stop after this many frames.

    Returns:
        (uint8 (T, H, W, 3) RGB frames, frames per second or 0.0 when the file does not say).

    Raises:
        IdentifyError: the file is missing, is not a video OpenCV can open, or yields no frame.
    """
    # FFmpeg's own log lines ("moov atom not found") would precede our one-line error; the user can
    # still ask for them by setting the variable.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    path = Path(path)
    if not path.is_file():
        raise IdentifyError(f"{path}: no such video file")
    with _native_stderr_silenced():  # OpenCV's AVI parser prints "Unexpected element" for garbage files
        cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise IdentifyError(f"{path}: cannot open as a video (not a video, corrupt, or an unsupported codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = []
        size = None
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            if size is None:
                h, w = frame.shape[:2]
                scale = min(1.0, max_height / h) if max_height else 1.0
                size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise IdentifyError(f"{path}: the video yields no frames (empty or unreadable)")
    return np.stack(frames), fps


def is_mask_video(frames: np.ndarray, sample: int = 24) -> bool:
    """Whether RGB frames (T, H, W, 3) are binary masks (grey, almost every pixel near 0 or 255).

    Codecs blur mask edges, so 97% of the sampled pixels near black or white suffices.
    """
    idx = np.linspace(0, len(frames) - 1, min(sample, len(frames))).astype(int)
    f = frames[idx].astype(np.int16)
    spread = f.max(axis=3) - f.min(axis=3)
    if np.mean(spread > 24) > 0.01:
        return False
    grey = f.mean(axis=3)
    extreme = (grey < 40) | (grey > 215)
    return bool(np.mean(extreme) >= 0.97)


def camera_motion(frames: np.ndarray, max_pairs: int = 40) -> np.ndarray:
    """Share of tracked corners that stay still (move < 0.5 px) between consecutive frames.

    Corners (``cv2.goodFeaturesToTrack``) followed by pyramidal Lucas-Kanade: on a static camera the
    corners of the scene stay put (walkers move only theirs), so a good share is still; a pan or a
    hand-held camera moves them all and the share drops near 0. Returns float (K,) for up to
    ``max_pairs`` evenly spaced consecutive pairs (pairs without trackable corners are left out).
    """
    import cv2

    if len(frames) < 2:
        return np.zeros(0)
    idx = np.unique(np.linspace(0, len(frames) - 2, min(max_pairs, len(frames) - 1)).astype(int))
    out = []
    for i in idx:
        a, b = (cv2.cvtColor(frames[j], cv2.COLOR_RGB2GRAY) for j in (i, i + 1))
        pts = cv2.goodFeaturesToTrack(a, maxCorners=300, qualityLevel=0.01, minDistance=6)
        if pts is None or len(pts) < 8:
            continue
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(15, 15), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() < 8:
            continue
        out.append(float(np.mean(np.linalg.norm((nxt - pts).reshape(-1, 2)[ok], axis=1) < 0.5)))
    return np.asarray(out)


def _blur(frames: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames.astype(np.float32)])


def _still_segment(frames_f: np.ndarray, noise: float) -> np.ndarray | None:
    """Indices of the longest still run (no motion anywhere) at the start or end of the clip, or None.

    A frame pair is still when under 0.05% of its pixels moved more than the noise allows.
    """
    if len(frames_f) < 6:
        return None
    step = np.sqrt(((frames_f[1:] - frames_f[:-1]) ** 2).sum(axis=3))  # (T-1, H, W)
    moved = (step > max(12.0, 6.0 * noise)).mean(axis=(1, 2))
    still = moved < 5e-4
    runs = []
    n = 0
    while n < len(still) and still[n]:
        n += 1
    if n >= 2:
        runs.append(np.arange(0, n + 1))
    m = 0
    while m < len(still) and still[len(still) - 1 - m]:
        m += 1
    if m >= 2 and m < len(still):
        runs.append(np.arange(len(frames_f) - m - 1, len(frames_f)))
    if not runs or n == len(still):
        return None  # nothing still, or nothing ever moves (no walker: handled later)
    return max(runs, key=len)


def _noise_level(frames_f: np.ndarray) -> float:
    """Sensor noise (grey-level SD of one channel after the blur) from frame-to-frame differences."""
    idx = np.linspace(0, len(frames_f) - 2, min(10, len(frames_f) - 1)).astype(int) if len(frames_f) > 1 else []
    if len(idx) == 0:
        return 2.0
    d = np.abs(frames_f[idx + 1] - frames_f[idx])
    return float(1.4826 * np.median(d) / np.sqrt(2.0))


def estimate_background(frames: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str]:
    """Background (H, W, 3) float32 of an RGB clip and the method really used.

    Args:
        frames: uint8 (T, H, W, 3).
        method: ``auto`` (still lead-in/lead-out segment when there is one, else median),
            ``leadin`` (the same, an error when there is none), ``median`` (temporal median of up
            to 80 evenly spaced frames).

    Returns:
        (background float32 (H, W, 3), method used).
    """
    if method in ("auto", "leadin"):
        blurred = _blur(frames)
        seg = _still_segment(blurred, _noise_level(blurred))
        if seg is not None:
            return np.median(frames[seg].astype(np.float32), axis=0), "leadin"
        if method == "leadin":
            raise IdentifyError("background_method=leadin: the clip neither starts nor ends with still, "
                                "empty frames")
    idx = np.linspace(0, len(frames) - 1, min(80, len(frames))).astype(int)
    return np.median(frames[idx].astype(np.float32), axis=0), "median"


def _subtractor_masks(frames: np.ndarray, method: str) -> np.ndarray:
    import cv2

    sub = (cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=True) if method == "mog2"
           else cv2.createBackgroundSubtractorKNN(history=500, dist2Threshold=400.0, detectShadows=True))
    out = np.empty(frames.shape[:3], bool)
    for i, f in enumerate(frames):
        out[i] = sub.apply(np.ascontiguousarray(f[:, :, ::-1])) == 255  # 127 = shadow: background
    return out


def foreground_masks(frames: np.ndarray, background: np.ndarray | None, opts: SilhouetteOptions,
                     method: str = "median") -> np.ndarray:
    """Raw foreground (T, H, W) bool: colour distance to ``background`` above a noise-adaptive threshold,
    or OpenCV's subtractor output when ``method`` is ``mog2`` / ``knn`` (``background`` None)."""
    if method in ("mog2", "knn"):
        return _subtractor_masks(frames, method)
    import cv2

    noise = _noise_level(frames.astype(np.float32))
    thr = max(float(opts.threshold), float(opts.noise_factor) * noise * np.sqrt(3.0))
    bg = background.astype(np.float32)
    window = np.ones((int(opts.local_window), int(opts.local_window)), np.uint8)
    out = np.empty(frames.shape[:3], bool)
    for i, f in enumerate(frames):  # frame by frame: bounded float memory on long clips
        dist = np.sqrt(((f.astype(np.float32) - bg) ** 2).sum(axis=2))
        out[i] = (dist > thr) & (dist >= float(opts.local_contrast) * cv2.dilate(dist, window))
    return out


def _kernel(size: int):
    import cv2

    size = max(1, int(size)) | 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def clean_mask(raw: np.ndarray, max_hole: float = 0.02, open_px: int = 3, close_px: int = 3,
               piece_min: float = 0.02) -> tuple[np.ndarray, int, int]:
    """Clean one raw foreground mask.

    Opening removes specks, closing joins limbs, the largest connected component is kept together
    with sizeable pieces of the same person (inside its rows and columns), and small holes are filled.

    Args:
        raw: bool (H, W).
        max_hole: holes up to this share of the silhouette's area are filled.
        open_px: size of the opening ellipse at 240 rows (scaled with the frame height; 0: none).
        close_px: size of the closing ellipse, likewise.
        piece_min: other components in the walker's columns, at most a quarter of its height away,
            of at least this share of its area are kept as pieces of it (smaller specks would
            stretch the crop).

    Returns:
        (uint8 (H, W) 0/255 silhouette, area of the largest component, area of the largest component
        of *another* person (0 when none)).
    """
    import cv2

    h = raw.shape[0]
    m = raw.astype(np.uint8)
    scale = max(1.0, h / 240.0)
    if open_px:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(round(open_px * scale)))
    if close_px:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _kernel(round(close_px * scale)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros_like(m), 0, 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas) + 1
    best = order[0]
    x, y, w, hh, area = stats[best]
    margin = 0.1 * hh
    keep = [best]
    other = 0
    for lab in order[1:]:
        lx, ly, lw, lh, la = stats[lab]
        if not (lx < x + w + margin and lx + lw > x - margin):
            other = max(other, int(la))  # beside the walker: another person?
        elif la >= piece_min * area and ly < y + hh + 0.25 * hh and ly + lh > y - 0.25 * hh:
            keep.append(lab)  # a piece of the walker (legs past a low-contrast waist), near it
    out = np.isin(labels, keep).astype(np.uint8)
    # hole filling: background components not touching the border and small next to the person
    nh, holes, hstats, _ = cv2.connectedComponentsWithStats(1 - out, connectivity=4)
    limit = max_hole * float(out.sum())
    H, W = out.shape
    for j in range(1, nh):
        hx, hy, hw, hh2, ha = hstats[j]
        if hx > 0 and hy > 0 and hx + hw < W and hy + hh2 < H and ha <= limit:
            out[holes == j] = 1
    return out * np.uint8(255), int(area), other


def extract_silhouettes(path: str | os.PathLike, background: str | os.PathLike | None = None,
                        opts: SilhouetteOptions | None = None) -> Silhouettes:
    """Silhouettes of the one walker of a static-camera video (RGB or a video of masks).

    Args:
        path: the video file.
        background: an image of the empty scene (same camera position), optional.
        opts: extraction settings (defaults: :class:`SilhouetteOptions`).

    Returns:
        :class:`Silhouettes` of the frames where the walker is fully in view.

    Raises:
        IdentifyError: unreadable video or background image, nobody in the clip, several people,
            or a moving camera; the message names the file.
    """
    opts = opts or SilhouetteOptions()
    frames, fps = read_video(path, opts.max_height, opts.max_frames)
    T, H, W = frames.shape[:3]
    if is_mask_video(frames):
        raw = frames.mean(axis=3) > 127
        kind, used = "mask", "none (mask video)"
    else:
        kind = "rgb"
        still = camera_motion(frames)
        moving = float(np.mean(still < 0.2)) if still.size else 0.0
        if moving >= opts.moving_share:
            raise IdentifyError(f"{path}: the whole picture shifts between {moving:.0%} of the frames: the camera "
                                "moves; a static camera is needed")
        if background is not None:
            bg, used = _read_background(background, W, H), "image"
            raw = foreground_masks(frames, bg, opts)
        elif opts.background_method in ("mog2", "knn"):
            used = opts.background_method
            raw = foreground_masks(frames, None, opts, used)
        else:
            bg, used = estimate_background(frames, opts.background_method)
            raw = foreground_masks(frames, bg, opts)
    del frames
    share = raw.mean(axis=(1, 2))
    if kind == "rgb" and np.mean(share > 0.5) >= opts.moving_share:
        raise IdentifyError(f"{path}: most of the picture changes in {np.mean(share > 0.5):.0%} of the frames: "
                            "the camera moves (or the light changes); a static camera is needed")
    min_area = opts.min_person * H * W
    masks, kept, dropped = [], [], {"nobody": 0, "border": 0}
    several = 0
    for t in range(T):
        m, area, other = clean_mask(raw[t], opts.max_hole, opts.open_px, opts.close_px, opts.piece_min)
        if area < min_area:
            dropped["nobody"] += 1
            continue
        if other >= max(min_area, 0.35 * area):
            several += 1
        cols = np.flatnonzero(m.any(axis=0))
        if opts.drop_border and (cols[0] == 0 or cols[-1] == W - 1):
            dropped["border"] += 1
            continue
        masks.append(m)
        kept.append(t)
    seen = len(kept) + dropped["border"]
    if seen and several >= max(3, opts.multi_person_share * seen):
        raise IdentifyError(f"{path}: several people in {several} of {seen} frames; one walker per clip is "
                            "supported (cut the clip or film one person at a time)")
    if len(kept) < opts.min_frames:
        why = ("nobody walks through it" if seen == 0 else
               f"only {len(kept)} frame(s) show a whole walker (need {opts.min_frames})")
        raise IdentifyError(f"{path}: no usable silhouettes: {why} (background: {used})")
    arr = np.stack(masks)
    return Silhouettes(arr, np.asarray(kept, dtype=np.int64), T, kind, used, dropped, fps, str(path))


def _read_background(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    import cv2

    p = Path(path)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR) if p.is_file() else None
    if img is None:
        raise IdentifyError(f"{p}: cannot read the background image (missing or not an image)")
    h, w = img.shape[:2]
    if abs(w / h - width / height) > 0.02:
        raise IdentifyError(f"{p}: background image is {w}x{h}, the video {width}x{height} (another aspect ratio)")
    if (w, h) != (width, height):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)


def write_silhouettes(sil: Silhouettes, out_dir: str | os.PathLike) -> Path:
    """Write the silhouettes as PNG frames ``<out_dir>/<video frame:05d>.png`` plus ``silhouettes.json``.

    The folder is written under a temporary name and renamed at the end, so it is either complete or
    absent. An existing non-empty ``out_dir`` is refused.

    Args:
        sil: the extraction result.
        out_dir: the folder to create (one sequence: ``prepare`` and ``enroll`` read it).

    Returns:
        The folder.

    Raises:
        IdentifyError: ``out_dir`` exists and is not empty.
    """
    from PIL import Image

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IdentifyError(f"{out}: already exists and is not empty; choose another out= or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for t, m in zip(sil.frame_indices, sil.masks):
            Image.fromarray(m, mode="L").save(tmp / f"{int(t):05d}.png", compress_level=1)
        (tmp / "silhouettes.json").write_text(json.dumps(sil.summary(), indent=2))
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def options_dict(opts: SilhouetteOptions) -> dict:
    """The options as a plain dict (stored with gallery entries)."""
    return asdict(opts)
