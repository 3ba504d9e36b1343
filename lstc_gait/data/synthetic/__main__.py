"""Generate a SynthGait instance from the command line.

    python -m lstc_gait.data.synthetic --instance default --data-dir data [--workers 2] [--seed 0]
    python -m lstc_gait.data.synthetic --instance tiny --raw-only /tmp/synth_raw
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .generate import SynthParams, ensure_synthetic, generate_raw

INSTANCES = {"tiny": SynthParams.tiny, "default": SynthParams.default, "casia_b": SynthParams.casia_b}


def main(argv: list[str] | None = None) -> int:
    """Generate (and, unless ``--raw-only``, prepare) one SynthGait instance.

    Prints the prepared cache folder, or the number of raw frames written with ``--raw-only``.

    Args:
        argv: Command-line arguments without the program name (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0, or 2 when the parameters are invalid (the reason is printed on stderr).

    Raises:
        SystemExit: ``argparse`` exits on ``--help`` (status 0) or an unknown or malformed option
            (status 2).
        EmptyCacheError: Preparing the generated tree kept no sequence (see
            :func:`lstc_gait.data.prepare.prepare_cache`).
        OSError: The data folder cannot be written.
    """
    ap = argparse.ArgumentParser(prog="python -m lstc_gait.data.synthetic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instance", choices=sorted(INSTANCES), default="default")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--raw-only", type=Path, default=None, metavar="ROOT",
                    help="only write the raw CASIA-B tree to ROOT (no cache)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--subjects", type=int, default=None, help="override num_subjects")
    args = ap.parse_args(argv)
    params = INSTANCES[args.instance]()
    if args.seed is not None:
        params.seed = args.seed
    if args.subjects is not None:
        params.num_subjects = args.subjects
    try:
        params.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.raw_only is not None:
        n = generate_raw(args.raw_only, params, workers=args.workers)
        print(f"{n} frames written under {args.raw_only}")
    else:
        print(ensure_synthetic(params, args.data_dir, workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
