"""Identify walkers from one's own static-camera videos: silhouettes, a gallery, enrolment, open-set identification.

Public API:

- :func:`extract_silhouettes`, :func:`write_silhouettes`, :class:`SilhouetteOptions` (``video``);
- :class:`Gallery` (``gallery``);
- :func:`enroll`, :func:`identify`, :func:`calibrate_threshold`, :func:`rank_subjects` (``pipeline``);
- :class:`IdentifyError` (``errors``);
- :func:`render_clip`, :func:`write_video` (``synthvideo``: SynthGait walkers filmed over a scene).
"""

from .errors import IdentifyError
from .gallery import Gallery
from .pipeline import CSV_COLUMNS, calibrate_threshold, enroll, identify, rank_subjects
from .synthvideo import render_clip, write_video
from .video import SilhouetteOptions, Silhouettes, extract_silhouettes, write_silhouettes

__all__ = [
    "CSV_COLUMNS",
    "Gallery",
    "IdentifyError",
    "SilhouetteOptions",
    "Silhouettes",
    "calibrate_threshold",
    "enroll",
    "extract_silhouettes",
    "identify",
    "rank_subjects",
    "render_clip",
    "write_silhouettes",
    "write_video",
]
