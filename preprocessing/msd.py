"""Preprocess a Medical Segmentation Decathlon task (TaskXX_Name/dataset.json) into a cache.

python preprocessing/msd.py /data/Task09_Spleen --cache /scratch/cache
python preprocessing/msd.py /data/Task03_Liver --cache /scratch/cache --set data.sources.0.options.label_map={2: liver}
"""

import sys

from _script import run

if __name__ == "__main__":
    sys.exit(run("msd", __doc__))
