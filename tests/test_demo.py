"""The README's main job: the demo trainer learns its synthetic task (loss well below chance)."""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import train_synthetic  # noqa: E402


def test_demo_loss_falls_below_chance(tmp_path):
    with open(os.path.join(HERE, "..", "configs", "demo.json")) as f:
        cfg = json.load(f)
    cfg["steps"] = 150
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(cfg))
    first, last = train_synthetic.main(["--config", str(path)])
    chance = math.log(cfg["vocab_size"])
    assert abs(first - chance) < 0.3, "an untrained model should start near chance"
    assert last < 0.7 * chance
