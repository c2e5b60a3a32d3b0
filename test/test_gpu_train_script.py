"""The one-call GPU training script (scripts/gpu_train_geometry.sh), dry run on the CPU.

A lent GPU gets 15 minutes in all; the script that spends them must work before it gets
there. This runs every step at toy size (ALLOW_CPU=1 TINY=1): dataset, training, the val
checks, and checks that what comes back to $OUT is complete and loads in the node's loader.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.config import Cut3rConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_training_script_dry_run_on_the_cpu(tmp_path):
    env = {**os.environ, 'ALLOW_CPU': '1', 'TINY': '1', 'PYTHON': sys.executable,
           'OUT': str(tmp_path / 'out'), 'WORK': str(tmp_path / 'work'), 'TOTAL_S': '400',
           'EVAL_S': '120', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(['bash', 'scripts/gpu_train_geometry.sh'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = tmp_path / 'out'
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(['best.safetensors', 'summary.json', 'metrics.jsonl', 'loss.png',
                            'pose_val.json', 'keyframes_val.json', 'train_gpu.log'])
    assert len(names) <= 8  # what a device call brings back
    assert load_cut3r(out / 'best.safetensors').config == Cut3rConfig.small()
    assert json.loads((out / 'summary.json').read_text())['steps'] == 2
    pose = json.loads((out / 'pose_val.json').read_text())['results']
    assert set(pose) == {'pose head', 'pointmap fit'}
    assert 'training on cpu' in (out / 'train_gpu.log').read_text()
