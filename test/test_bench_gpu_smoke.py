"""Smoke test of the real-size GPU benchmark at tiny size on the CPU (benchmarks/gpu_realsize.py).

The GPU run itself needs an accelerator (benchmarks/gpu_oneshot.sh); this runs the same code
path with the tiny profile and the small CUT3R, so the script a GPU session runs in one call
is known to work end to end (stages, floors, ratios, JSON, table) before device time is
spent. The compiled runners are left out here to stay fast (``make bench-gpu ARGS='--size
tiny'`` runs them too).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_realsize
from benchmarks.gpu_report import measured_section, section


@pytest.fixture()
def one_thread():
    """Run the tiny models single-threaded (shared 2-core CI machine), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_run_measures_every_stage(tmp_path: Path, one_thread, capsys) -> None:
    """Every stage runs, every figure has a floor and a ratio, and the JSON is complete."""
    out = tmp_path / 'gpu_tiny.json'
    started = time.monotonic()
    code = gpu_realsize.main(['--size', 'tiny', '--device', 'cpu', '--out', str(out),
                              '--cut3r-modes', 'eager', 'stream', 'graph', 'onnx',
                              '--budget-s', '120'])
    elapsed = time.monotonic() - started
    doc = json.loads(out.read_text())
    assert code == 0, doc['errors']
    assert doc['errors'] == [] and doc['skipped'] == []
    assert doc['device'] == 'cpu' and doc['machine']['cuda'] in (True, False)

    ceilings = doc['ceilings']
    assert ceilings['matmul']['float32']['flop_per_s'] > 0
    assert ceilings['copy']['bytes_per_s'] > 0

    cut3r = doc['cut3r']['float32']
    assert cut3r['image_size'] == [160, 160]
    assert cut3r['floor']['floor_ms'] > 0 and cut3r['floor']['flops'] > 0
    for mode in ('eager', 'stream'):
        res = cut3r['modes'][mode]
        assert res['timing']['loop_ms'] > 0 and res['timing']['clock'] == 'perf_counter'
        assert res['ratio_to_floor'] > 0 and res['frames_per_s'] > 0
        assert res['state_bytes'] > 0
    assert 'CUDA' in cut3r['modes']['graph']['skipped']
    assert 'onnx' in cut3r['modes'] and ('timing' in cut3r['modes']['onnx']
                                         or cut3r['modes']['onnx']['skipped'])

    llm = doc['llm']['float32']
    assert llm['profile'] == 'tiny' and llm['visual_tokens'] == 32 * 56
    for key in ('encode', 'prefill', 'ttft', 'first_question', 'repeated_question',
                'new_question', 'decode'):
        assert llm[key]['ms'] > 0, key
        assert llm[key]['floor']['floor_ms'] > 0, key
        assert llm[key]['ratio_to_floor'] > 0, key
    # Fixed-length decoding and a real prefix hit: only the question is prefilled on a hit.
    assert llm['generated_tokens'] == doc['size']['answer_tokens']
    assert llm['question_tokens'] < llm['prefix_tokens']
    assert llm['prefix_kv_bytes'] > 0
    assert llm['repeated_question']['ms'] < llm['first_question']['ms']

    printed = capsys.readouterr().out
    assert 'LMM float32 decode (ms/token)' in printed and 'CUT3R float32 eager' in printed
    assert elapsed < 20, f'tiny run took {elapsed:.1f} s'

    # The BENCHMARKS.md section renders from the same document.
    markdown = measured_section(doc)
    assert '| LMM float32 decode, ms/token |' in markdown
    assert '| CUT3R float32 eager, ms/frame' in markdown and 'TFLOP/s' in markdown


def test_section_without_a_gpu_result_says_not_measured(tmp_path: Path) -> None:
    """Without a recorded device run the section claims no GPU number."""
    text = section(tmp_path / 'absent.json', tmp_path / 'absent_node.json')
    assert text.startswith('## GPU (not yet measured)')
    assert 'gpu_oneshot.sh' in text
    assert not re.search(r'\d\s*(ms|TFLOP/s|TB/s|GiB)', text.replace('8192^3', '').replace(
        '4 GiB', '').replace('64 MiB', '')), 'a number in the not-measured section'


def test_budget_skips_stages_and_keeps_the_json(tmp_path: Path, one_thread) -> None:
    """A budget too small for any stage skips them all and still writes a valid document."""
    out = tmp_path / 'skipped.json'
    code = gpu_realsize.main(['--size', 'tiny', '--device', 'cpu', '--out', str(out),
                              '--budget-s', '0'])
    doc = json.loads(out.read_text())
    assert code == 0
    assert {s['stage'] for s in doc['skipped']} >= {'ceilings', 'llm:float32', 'cut3r:build'}
    assert doc['cut3r'] == {} and doc['llm'] == {}
