"""Preprocess CHAOS (CT and MR DICOM series with Ground PNG labels) into a cache.

python preprocessing/chaos.py /data/CHAOS_Train_Sets --cache /scratch/cache --modality mr
"""

import sys

from _script import run


def add_arguments(parser):
    parser.add_argument("--modality", choices=["ct", "mr"], help="keep only the CT or the MR cases")


if __name__ == "__main__":
    sys.exit(run("chaos", __doc__, lambda args: {"modality": args.modality}, add_arguments))
