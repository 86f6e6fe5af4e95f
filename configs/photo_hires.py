"""configs/photo_wide.py's recipe on faces at 128 x 128 instead of 96 x 96 (the eyes 48 px apart, not 36), with the
context and the shift scaled with them (margin 32 px, shift +-8 px): the model shipped before
configs/photo_hires_wing.py, the same recipe with the Wing loss.

    kpjax train --config configs/photo_hires.py --run-dir runs/photo_hires

Its run trained on the H200 lent to one session, beside configs/photo_wide.py's network with a last
decoder stage at 1/2 resolution (`heatmap-fine`: 3.41 %), both in one 9-minute call
(experiments/device_train.py pack configs/photo_hires.py 80, then drive): 1.5 s an epoch, stopped by the call's
deadline after 230 of its 266 epochs; the best validation epoch, 197, was kept. End to end it took the NME from
3.52 % (photo_wide, 96 x 96) to 3.36 %, at about 1.8x the network's time per pass. The wider network at 96 x 96
(`heatmap-xl`, 1.9 M parameters) had scored 3.56 %: the pixels, not the channels, were what the model lacked.
"""

import dataclasses
from pathlib import Path

from kpjax.config import TrainConfig, load_config


def get_config() -> TrainConfig:
    return dataclasses.replace(load_config(Path(__file__).with_name("photo_wide.py")), size=128, margin=32, shift=8.0,
                               epochs=266)
