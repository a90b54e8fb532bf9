"""Preprocess BTCV (Synapse Abdomen, RawData/Training/img|label or imagesTr/labelsTr) into a cache.

python preprocessing/btcv.py /data/Abdomen/RawData --cache /scratch/cache
"""

import sys

from _script import run

if __name__ == "__main__":
    sys.exit(run("btcv", __doc__))
