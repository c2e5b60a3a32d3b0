"""The one-call GPU training scripts (scripts/gpu_train_geometry.sh, gpu_train_vlm3r.sh),
dry run on the CPU.

A lent GPU gets 15 minutes in all; the scripts that spend them must work before they get
there. This runs every step at toy size (ALLOW_CPU=1 TINY=1): dataset, training, the checks,
and checks that what comes back to $OUT is complete and loads in the node's loaders.
"""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.config import Cut3rConfig

ROOT = Path(__file__).resolve().parents[1]


def dry_run(script: str, tmp_path: Path) -> Path:
    """Run ``script`` at toy size on the CPU; return its $OUT."""
    env = {**os.environ, 'ALLOW_CPU': '1', 'TINY': '1', 'PYTHON': sys.executable,
           'OUT': str(tmp_path / 'out'), 'WORK': str(tmp_path / 'work'), 'TOTAL_S': '400',
           'EVAL_S': '120', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(['bash', script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return tmp_path / 'out'


@pytest.mark.slow
def test_gpu_geometry_training_script_dry_run_on_the_cpu(tmp_path):
    out = dry_run('scripts/gpu_train_geometry.sh', tmp_path)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(['best.safetensors', 'summary.json', 'metrics.jsonl', 'loss.png',
                            'pose_val.json', 'keyframes_val.json', 'train_gpu.log'])
    assert len(names) <= 8  # what a device call brings back
    assert load_cut3r(out / 'best.safetensors').config == Cut3rConfig.small()
    assert json.loads((out / 'summary.json').read_text())['steps'] == 2
    pose = json.loads((out / 'pose_val.json').read_text())['results']
    assert set(pose) == {'pose head', 'pointmap fit', 'still camera', 'tracking',
                         'tracking, rotation only', 'tracking, no camera_info'}
    assert 'training on cpu' in (out / 'train_gpu.log').read_text()


@pytest.mark.slow
def test_gpu_fused_model_training_script_dry_run_on_the_cpu(tmp_path):
    from vlm3r_ros.models.profiles import get_profile
    from vlm3r_ros.models.vlm3r.checkpoint import load_vlm3r
    out = dry_run('scripts/gpu_train_vlm3r.sh', tmp_path)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(['release.tar', 'eval_test.json', 'metrics.jsonl',
                            'metrics_blind.jsonl', 'vision.json', 'train_vlm3r_gpu.log'])
    with tarfile.open(out / 'release.tar') as tar:
        tar.extractall(tmp_path / 'release', filter='data')
    for name in ('vlm3r_small', 'vlm3r_small_blind'):  # the layout the node's loader reads
        release = tmp_path / 'release' / name
        load_vlm3r(release / 'base', release / 'adapter', profile=get_profile('tiny'))
    report = json.loads((out / 'eval_test.json').read_text())
    assert set(report['summary']) == {'model', 'blind', 'shuffled', 'frequency', 'chance'}
    assert 'tuning the model and its blind twin on cpu' in (out / 'train_vlm3r_gpu.log'
                                                            ).read_text()
