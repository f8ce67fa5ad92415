"""Start or resume a training run: python scripts/train_run.py RUN_DIR [json overrides]."""
import json
import sys

from nelloc.train import TrainConfig, Trainer

run_dir, overrides = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
Trainer(TrainConfig.from_overrides(overrides), run_dir).run(quiet=True)
