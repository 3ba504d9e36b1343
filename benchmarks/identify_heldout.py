"""Held-out identification from video, as the issue's check describes it, on one's own rendered clips.

    PYTHONPATH=. python benchmarks/identify_heldout.py checkpoint=CKPT [known=15] [unknown=5] [frames=40] [video_threshold=36]

Walkers of SynthGait seed 0 (a model trained on another seed has never seen them) are filmed from the
side (90 deg) over a textured scene with sensor noise and a few empty lead-in frames, written as MP4.
``known`` walkers are enrolled from 2 videos each (nm-01, nm-02); one more video (nm-03) of each and
of ``unknown`` never-enrolled walkers is identified. The same is done from the clean rendered masks
(folders of frames) for comparison. Prints top-1, accepted/rejected decisions and the threshold.
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lstc_gait.identify import SilhouetteOptions, enroll, identify, render_clip, write_video


def _args() -> dict:
    out = {"checkpoint": None, "known": 15, "unknown": 5, "frames": 40, "lead_in": 5, "far": 0.01, "keep": "",
           "video_threshold": 36.0}
    for a in sys.argv[1:]:
        k, v = a.split("=", 1)
        out[k] = v if k in ("checkpoint", "keep") else (float(v) if k in ("far", "video_threshold") else int(v))
    if not out["checkpoint"]:
        sys.exit("usage: identify_heldout.py checkpoint=CKPT [known=15] [unknown=5] [frames=40]")
    return out


def _decisions(rows: list[dict], truth: dict[str, str | None]) -> dict:
    top1 = {r["probe"]: r for r in rows if int(r["rank"]) == 1}
    known = [p for p, s in truth.items() if s is not None]
    unknown = [p for p, s in truth.items() if s is None]
    right = sum(top1[p]["subject"] == truth[p] for p in known)
    right_acc = sum(top1[p]["subject"] == truth[p] and top1[p]["accepted"] for p in known)
    rejected = sum(not top1[p]["accepted"] for p in unknown)
    return {"top1": right, "known_correct_accepted": right_acc, "unknown_rejected": rejected,
            "decisions": right_acc + rejected, "n_known": len(known), "n_unknown": len(unknown),
            "known_dist": [round(top1[p]["distance"], 3) for p in known],
            "unknown_dist": [round(top1[p]["distance"], 3) for p in unknown]}


def main() -> None:
    a = _args()
    tmp = Path(a["keep"]) if a["keep"] else Path(tempfile.mkdtemp(prefix="heldout-"))
    tmp.mkdir(parents=True, exist_ok=True)
    known = list(range(1, a["known"] + 1))
    unknown = list(range(a["known"] + 1, a["known"] + a["unknown"] + 1))
    t0 = time.perf_counter()
    enrol_rows = {"video": [], "frames": []}
    probe_rows = {"video": [], "frames": []}
    truth = {"video": {}, "frames": {}}
    for s in known + unknown:
        for t in (("nm-01", "nm-02", "nm-03") if s in known else ("nm-03",)):
            name = f"w{s:03d}-{t}"
            video = tmp / f"{name}.mp4"
            folder = tmp / name
            if not video.exists() or not folder.exists():
                clip = render_clip((s,), view="090", frames=a["frames"], lead_in=a["lead_in"], seq_type=t)
                write_video(video, clip.frames, clip.fps)
                folder.mkdir(exist_ok=True)
                for i, m in enumerate(clip.masks):
                    Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{i:05d}.png")
            for kind, path in (("video", video), ("frames", folder)):
                if t == "nm-03":
                    probe_rows[kind].append(str(path))
                    truth[kind][str(path)] = str(s) if s in known else None
                else:
                    enrol_rows[kind].append((str(path), str(s)))
    print(f"rendered in {time.perf_counter() - t0:.0f} s under {tmp}")
    for kind in ("video", "frames"):
        gal = tmp / f"gallery-{kind}-{a['video_threshold']:g}"
        shutil.rmtree(gal, ignore_errors=True)
        opts = SilhouetteOptions(threshold=a["video_threshold"])
        with open(tmp / f"enrol-{kind}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "subject"])
            w.writerows(enrol_rows[kind])
        with open(tmp / f"probe-{kind}.csv", "w", newline="") as fh:
            fh.write("path\n" + "\n".join(probe_rows[kind]) + "\n")
        t0 = time.perf_counter()
        rep = enroll(a["checkpoint"], gal, tmp / f"enrol-{kind}.csv", far=a["far"], device="cpu", opts=opts)
        res = identify(gal, tmp / f"probe-{kind}.csv", tmp / f"result-{kind}.csv", far=a["far"], device="cpu",
                       opts=opts)
        d = _decisions(res.rows, truth[kind])
        th = res.threshold_info
        print(f"{kind:6s}: top-1 {d['top1']}/{d['n_known']}, known right+accepted {d['known_correct_accepted']}, "
              f"unknown rejected {d['unknown_rejected']}/{d['n_unknown']}, decisions {d['decisions']}/"
              f"{d['n_known'] + d['n_unknown']}; threshold {th['value']:.4f} (gallery EER {th.get('eer')}, "
              f"TAR {th.get('tar')}); {len(rep.added)} enrolled; {time.perf_counter() - t0:.0f} s")
        print(f"        known top-1 distances {d['known_dist']}\n        unknown {d['unknown_dist']}")


if __name__ == "__main__":
    main()
