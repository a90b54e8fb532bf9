"""Preprocess FLARE22 / FLARE23 (labelled, partially labelled and unlabelled folders) into a cache.

python preprocessing/flare.py /data/FLARE2022 --cache /scratch/cache --splits unlabelled
"""

import sys

from _script import run


def add_arguments(parser):
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=["train", "tuning", "validation", "test", "unlabelled"],
        help="keep only these splits (default: every split found)",
    )


def source_fields(args):
    return {"options": {"splits": args.splits}} if args.splits else {}


if __name__ == "__main__":
    sys.exit(run("flare", __doc__, source_fields, add_arguments))
