"""Preprocess AMOS22 (imagesTr/labelsTr, imagesVa/labelsVa, imagesTs) into a cache.

python preprocessing/amos.py /data/amos22 --cache /scratch/cache --modality mr
"""

import sys

from _script import run


def add_arguments(parser):
    parser.add_argument(
        "--modality", choices=["ct", "mr"], help="keep only CT (ids 1-500, >=5000) or MR (501-600)"
    )


if __name__ == "__main__":
    sys.exit(run("amos", __doc__, lambda args: {"modality": args.modality}, add_arguments))
