"""Preprocess NAKO Dixon MRI (NIfTI files + manifest of subject, contrast, path) into a cache.

python preprocessing/nako.py /data/nako --cache /scratch/cache --manifest manifest.csv
"""

import sys

from _script import run


def add_arguments(parser):
    parser.add_argument("--manifest", help="CSV/YAML manifest (default: ROOT/manifest.csv|yaml)")
    parser.add_argument("--contrasts", nargs="+", help="channel order (default: water fat in opp)")


def source_fields(args):
    options = {"manifest": args.manifest, "contrasts": args.contrasts}
    return {"modality": "mr", "options": {k: v for k, v in options.items() if v is not None}}


if __name__ == "__main__":
    sys.exit(run("nako", __doc__, source_fields, add_arguments))
