"""configs/photo_160.py's recipe trained with the Wing loss, as the shipped model's (configs/photo_hires_wing.py) is
at 128 x 128: the two levers that each helped, together.

    kpjax train --config configs/photo_160_wing.py --run-dir runs/photo_160_wing

Trained on the H200 lent to one session, beside the narrower `heatmap` network at 160 (3.15 %), in one call
(experiments/device_train.py pack configs/photo_160.py 70, then drive 535 OUT w160=heatmap-wide:wing
n160=heatmap:wing): 1.4 s an epoch, its cosine schedule finished (200 epochs; best validation epoch 148), then
`kpjax calibrate`. End to end (3 passes, fast detector) it takes the NME from 3.09 % to 3.06 %, 3.02 % with flip
TTA, but YouTube Faces' from 4.75 % to 4.78 %, and each pass costs 1.4x the network time of the 128-pixel model's;
not shipped. Seeds alone move the shipped recipe's NME by 0.04 points (EXPERIMENTS.md).
"""

import dataclasses
from pathlib import Path

from kpjax.config import TrainConfig, load_config


def get_config() -> TrainConfig:
    return dataclasses.replace(load_config(Path(__file__).with_name("photo_160.py")), loss="wing", epochs=200)
