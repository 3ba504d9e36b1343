"""Library side of ``lstc_gait.silhouettes``, ``lstc_gait.enroll`` and ``lstc_gait.identify``.

Each ``run_*`` takes the composed Hydra config and the launch folder (relative paths resolve
against it), calls the library, prints a short report, and returns the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .pipeline import EnrolReport, Identification, enroll, format_ranking, identify
from .video import SilhouetteOptions, Silhouettes, extract_silhouettes, write_silhouettes


def _path(value: Any, base: Path) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def _opts(cfg: DictConfig) -> SilhouetteOptions:
    return SilhouetteOptions.from_mapping(OmegaConf.to_container(cfg.video, resolve=True))


def run_silhouettes(cfg: DictConfig, base_dir: Path) -> Silhouettes:
    """Extract a video's silhouettes into ``cfg.out``; returns them."""
    sil = extract_silhouettes(_path(cfg.input, base_dir), _path(cfg.background, base_dir), _opts(cfg))
    out = write_silhouettes(sil, _path(cfg.out, base_dir))
    d = sil.dropped
    print(f"{sil.source}: {len(sil.frame_indices)} silhouette frames of {sil.total_frames} written to {out} "
          f"({sil.kind} video, background: {sil.background}; dropped {d.get('nobody', 0)} without a person, "
          f"{d.get('border', 0)} cut by the frame border)")
    return sil


def run_enroll(cfg: DictConfig, base_dir: Path) -> EnrolReport:
    """Enrol ``cfg.input`` into ``cfg.gallery`` with ``cfg.checkpoint``; returns the report."""
    rep = enroll(_path(cfg.checkpoint, base_dir), _path(cfg.gallery, base_dir), _path(cfg.input, base_dir),
                 subject=None if cfg.subject is None else str(cfg.subject), background=_path(cfg.background, base_dir),
                 opts=_opts(cfg), metric=str(cfg.metric), far=float(cfg.far), device=str(cfg.device),
                 min_frames=int(cfg.min_frames), base_dir=base_dir)
    for e in rep.added:
        print(f"enrolled {e['source']} as subject {e['subject']} ({e['frames_used']} frames)")
    for s in rep.skipped:
        print(f"already enrolled (same content): {s}")
    th = rep.threshold
    line = (f"threshold {th['value']:.4f} at FAR {th['far']:g} ({th['genuine_pairs']} genuine / "
            f"{th['impostor_pairs']} impostor pairs; EER {th['eer']:.3f})" if th and th.get("eer") is not None
            else (f"threshold {th['value']:.4f} at FAR {th['far']:g}" if th else
                  "threshold: not yet calibrated (needs two subjects)"))
    print(f"gallery {cfg.gallery}: {rep.gallery_size} entries of {rep.subjects} subjects; {line}")
    return rep


def run_identify(cfg: DictConfig, base_dir: Path) -> Identification:
    """Identify ``cfg.input`` against ``cfg.gallery``; prints the ranking and writes ``cfg.out``."""
    th = cfg.threshold
    res = identify(_path(cfg.gallery, base_dir), _path(cfg.input, base_dir), _path(cfg.out, base_dir),
                   checkpoint=_path(cfg.checkpoint, base_dir), top_k=int(cfg.top_k),
                   threshold=th if isinstance(th, str) else float(th), far=float(cfg.far),
                   background=_path(cfg.background, base_dir), opts=_opts(cfg), device=str(cfg.device),
                   min_frames=int(cfg.min_frames), base_dir=base_dir)
    print(format_ranking(res))
    print(f"\nwritten to {cfg.out}")
    return res
