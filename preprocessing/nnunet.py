"""Preprocess an nnU-Net v2 raw data set (nnUNet_raw/DatasetXXX_Name) into a cache.

python preprocessing/nnunet.py /data/nnUNet_raw/Dataset701_AbdomenCT --cache /scratch/cache
"""

import sys

from _script import run

if __name__ == "__main__":
    sys.exit(run("nnunet", __doc__))
