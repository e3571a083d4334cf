"""Run RewardAttribution over a cache's test split on N CPU processes (tests/test_ddp_attribution.py).

python tests/scripts/attribution_run.py SARM_DIR CACHE_DIR OUTPUT_DIR DEVICES
"""

import sys
import warnings

import lightning as L

from sarm.attribution import RewardAttribution
from sarm.cache import PairActivationDataModule
from sarm.reward import SARM

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    sarm_dir, cache_dir, output, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RewardAttribution(output_dir=output, stages=("test",))],
    )
    trainer.test(SARM(init_from=sarm_dir), PairActivationDataModule(cache_dir, batch_size=3), verbose=False)
