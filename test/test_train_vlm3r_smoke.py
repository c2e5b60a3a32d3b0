"""Smoke test of the fused model's training chain on a dataset rendered here.

vlm3r-dataset -> vlm3r-pretrain-vision -> vlm3r-train (with the grounding aid, and its blind
twin) -> the release directory through the node's unchanged loader -> vlm3r-eval-model.
Tiny sizes throughout: this checks that the chain runs and writes what it promises, not
that it learns (the shipped weights' tests check that).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm3r_ros.models.profiles import get_profile
from vlm3r_ros.models.vlm3r.checkpoint import load_vlm3r
from vlm3r_ros.train import dataset, eval_vlm3r, qa_data, train_vlm3r, vision_pretrain
from vlm3r_ros.train.qa_grounding import (ABSENT, PRESENCE_CATEGORIES, PRESENT, UNCLEAR,
                                          listing_items, presence_items, presence_row)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('vlm3r_data')
    assert dataset.main(['--out', str(root), '--train', '4', '--val', '3', '--test', '2',
                         '--train-seconds', '2', '--eval-seconds', '2', '--qa-frames', '4',
                         '--qa-per-task', '2', '--workers', '1', '--shard-size', '4']) == 0
    return root


def test_presence_row_labels_seen_absent_and_unclear() -> None:
    scene = json.dumps({'objects': [{'instance_id': 0, 'category': 'chair'},
                                    {'instance_id': 1, 'category': 'sofa'}]})
    ids = np.full((10, 100), -1, dtype=np.int16)
    ids[:5, :10] = 0  # 5 % of the frame: a chair
    ids[0, 0] = 1  # one pixel of sofa: neither seen nor absent
    row = presence_row([ids, np.full_like(ids, -2)], scene)
    col = {c: k for k, c in enumerate(PRESENCE_CATEGORIES)}
    assert row[col['chair']] == PRESENT and row[col['sofa']] == UNCLEAR
    assert row[col['bed']] == ABSENT


def test_presence_items_are_balanced_within_each_category() -> None:
    rng = np.random.default_rng(0)
    presence = rng.choice([ABSENT, PRESENT, UNCLEAR], size=(50, len(PRESENCE_CATEGORIES)),
                          p=[0.3, 0.6, 0.1]).astype(np.int8)
    items = presence_items(list(range(100, 150)), presence, seed=1)
    assert items
    for cat in PRESENCE_CATEGORIES:
        answers = [i.answer_text for i in items if i.meta['category'] == cat]
        assert answers.count('yes') == answers.count('no')
    letters = [i.answer for i in items]
    assert 0.3 < letters.count('A') / len(letters) < 0.7  # no letter prior either
    for item in items:
        seed = qa_data.scene_of(item)
        label = presence[seed - 100, PRESENCE_CATEGORIES.index(item.meta['category'])]
        assert label == (PRESENT if item.answer_text == 'yes' else ABSENT)
        chosen = item.options[ord(item.answer) - ord('A')]
        assert chosen.endswith(item.answer_text)


def test_listing_items_name_the_clear_categories_and_list_the_present_ones() -> None:
    presence = np.full((2, len(PRESENCE_CATEGORIES)), ABSENT, dtype=np.int8)
    presence[0, [1, 4]] = PRESENT
    presence[0, 2] = UNCLEAR
    presence[1, :] = UNCLEAR
    presence[1, 0] = ABSENT
    first, second = listing_items([7, 8], presence)
    names = PRESENCE_CATEGORIES
    assert first.answer_text == f'{names[1]}, {names[4]}' and first.answer_type == 'text'
    assert names[2] not in first.question and names[3] in first.question
    assert second.answer_text == 'none' and qa_data.scene_of(second) == 8
    assert f'frames: {names[0]}?' in second.question  # only the one clear category is named
    assert listing_items([9], np.full((1, len(names)), UNCLEAR, dtype=np.int8)) == []


def test_training_chain_writes_a_release_the_node_loads(data_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    torch.set_num_threads(1)
    vision_out = tmp_path / 'vision'
    assert vision_pretrain.main(['--data', str(data_dir), '--out', str(vision_out),
                                 '--steps', '3', '--batch', '2', '--eval-scenes', '1',
                                 '--log-every', '1']) == 0
    common = ['--data', str(data_dir), '--vision', str(vision_out / 'vision.safetensors'),
              '--steps', '3', '--batch', '4', '--eval-every', '2', '--val-items', '8',
              '--log-every', '1', '--warmup-steps', '1', '--keep', 'last']
    full, blind = tmp_path / 'full', tmp_path / 'blind'
    assert train_vlm3r.main(common + ['--out', str(full)]) == 0
    assert train_vlm3r.main(common + ['--out', str(blind), '--blind']) == 0
    cache = qa_data.FeatureCache.load(data_dir / 'features-train-tiny.safetensors')
    assert cache.presence is not None
    assert tuple(cache.presence.shape) == (4, len(PRESENCE_CATEGORIES))
    rows = [json.loads(line) for line in (full / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if 'loss' in r][-1] == 3
    assert all(np.isfinite(r['loss']) for r in rows if 'loss' in r)
    assert any('grounding' in r.get('val', {}) for r in rows)
    # The release directory loads through the node's loader with its trained tensors.
    release = full / 'release'
    model = load_vlm3r(release / 'base', release / 'adapter', profile=get_profile('tiny'))
    trained = torch.load(full / 'ckpt.pt', map_location='cpu', weights_only=True)['params']
    net_params = {id(p) for p in model.net.parameters()}
    assert len(net_params) > 0
    projector = dict(model.net.mm_projector.named_parameters())
    assert any(torch.equal(projector[k], t) for k in projector for t in trained
               if t.shape == projector[k].shape)
    # A resumed run continues at its checkpoint's step.
    assert train_vlm3r.main(common[:-4] + ['--steps', '4', '--out', str(full)]) == 0
    assert 'resumed at step 3' in capsys.readouterr().out
    # The evaluator scores both releases beside the controls.
    report = tmp_path / 'eval.json'
    assert eval_vlm3r.main(['--data', str(data_dir), '--model', str(release),
                            '--blind-model', str(blind / 'release'), '--samples', '20',
                            '--out', str(report)]) == 0
    doc = json.loads(report.read_text())
    assert set(doc['summary']) == {'model', 'blind', 'shuffled', 'frequency', 'chance'}
    assert doc['test_items'] > 0 and 'model-blind' in doc['intervals']['differences']
    # Only the numeric decodings, the three of them on the same numeric items.
    assert eval_vlm3r.main(['--data', str(data_dir), '--model', str(release),
                            '--blind-model', str(blind / 'release'), '--numeric-only',
                            '--out', str(report)]) == 0
    modes = json.loads(report.read_text())['numeric_decoding']
    assert set(modes) == set(eval_vlm3r.NUMERIC_MODES)
    assert len({m['items'] for m in modes.values()}) == 1


def test_fused_run_starts_from_the_blind_llm_and_exports_its_best_step(data_dir: Path,
                                                                        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    common = ['--data', str(data_dir), '--vision', '', '--steps', '2', '--batch', '2',
              '--eval-every', '1', '--val-items', '4', '--log-every', '1',
              '--warmup-steps', '1', '--keep', 'best']
    blind, fused = tmp_path / 'blind', tmp_path / 'fused'
    assert train_vlm3r.main(common + ['--out', str(blind), '--blind']) == 0
    # lr 0: the fused run's LLM must stay exactly the blind twin's.
    assert train_vlm3r.main(common + ['--out', str(fused), '--lr', '0', '--min-lr', '0',
                                      '--grounding', 'both',
                                      '--init-llm-from', str(blind / 'release')]) == 0
    tiny = get_profile('tiny')
    source = load_vlm3r(blind / 'release' / 'base', blind / 'release' / 'adapter', profile=tiny)
    started = load_vlm3r(fused / 'release' / 'base', fused / 'release' / 'adapter',
                         profile=tiny)
    want = source.net.language_model.state_dict()
    got = started.net.language_model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    # keep 'best': the exported step is the first with the best validation score.
    rows = [json.loads(line) for line in (fused / 'metrics.jsonl').read_text().splitlines()]
    vals = [(r['val']['overall'], r['step']) for r in rows if 'val' in r]
    best = max(v for v, _ in vals)
    config = json.loads((fused / 'config.json').read_text())
    assert config['exported_step'] == next(s for v, s in vals if v == best)
    with pytest.raises(SystemExit):
        train_vlm3r.main(common + ['--out', str(tmp_path / 'bad'), '--blind', '--keep', 'x'])


@pytest.mark.slow
def test_two_gloo_processes_tune_with_averaged_gradients(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'ddp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MASTER_ADDR': '127.0.0.1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', str(29600 + os.getpid() % 1000), '-m',
           'vlm3r_ros.train.train_vlm3r', '--data', str(data_dir), '--out', str(out),
           '--vision', '', '--steps', '2', '--batch', '4', '--eval-every', '2',
           '--val-items', '4', '--log-every', '1', '--warmup-steps', '1']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / 'config.json').read_text())['world_size'] == 2
    rows = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if 'loss' in r] == [1, 2]  # rank 0 alone logs
    assert (out / 'release' / 'adapter').is_dir() and '2 process(es)' in proc.stdout


def test_cached_vision_features_follow_the_tower(data_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from vlm3r_ros.models.vlm3r.vision import build_siglip
    from vlm3r_ros.weights import CUT3R_SMALL
    torch.set_num_threads(1)
    tiny = get_profile('tiny')
    torch.manual_seed(1)
    first = build_siglip(tiny).state_dict()
    torch.manual_seed(2)
    second = build_siglip(tiny).state_dict()
    assert qa_data.tower_digest(first) != qa_data.tower_digest(second)
    built = qa_data.build_feature_cache(data_dir, 'val', tiny, first, CUT3R_SMALL, 4,
                                        progress=False)
    path = tmp_path / 'features-val-tiny.safetensors'
    built.save(path, {'vision_sha256': qa_data.tower_digest(first)})
    same = qa_data.cache_for_tower(path, data_dir, 'val', tiny, first)
    assert torch.equal(same.vision, built.vision) and 'recomputing' not in capsys.readouterr().out
    moved = qa_data.cache_for_tower(path, data_dir, 'val', tiny, second)
    assert 'recomputing' in capsys.readouterr().out
    fresh = qa_data.build_feature_cache(data_dir, 'val', tiny, second, CUT3R_SMALL, 4,
                                        progress=False)
    assert torch.allclose(moved.vision.float(), fresh.vision.float(), atol=1e-3)
    assert not torch.allclose(moved.vision.float(), built.vision.float(), atol=1e-3)
    assert torch.equal(moved.geometry, built.geometry)
    assert qa_data.FeatureCache.metadata(path)['vision_sha256'] == qa_data.tower_digest(second)
