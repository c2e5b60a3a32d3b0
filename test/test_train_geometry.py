"""Training side (no ROS): dataset shards, the CUT3R objective, the trainer, DDP, eval."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm3r_ros.eval.render import render, render_full
from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.models.cut3r.preprocess import pose_encoding_to_matrix
from vlm3r_ros.train import dataset as ds
from vlm3r_ros.train.eval_geometry import depth_scores, pose_scores, select_keyframes
from vlm3r_ros.train.geometry_data import (GeometrySequences, collate, matrix_to_pose_encoding,
                                           sequence_tensors)
from vlm3r_ros.train.geometry_loss import sequence_loss
from vlm3r_ros.train.scene_sampling import sample_sequence
from vlm3r_ros.train.train_geometry import Rollout, TrainConfig, learning_rate, ray_maps, train
from vlm3r_ros.models.cut3r.preprocess import ray_map
from vlm3r_ros.weights import CUT3R_SMALL

ROOT = Path(__file__).resolve().parents[1]
W, H = 64, 48


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """A 2-train, 1-val, 1-test scene dataset of 2 s sequences at 64x48."""
    root = tmp_path_factory.mktemp('geometry')
    jobs = ds.plan_jobs({'train': 2, 'val': 1, 'test': 1}, 1, {'train': 2.0, 'val': 2.0,
                        'test': 2.0}, 5.0, W, H, with_qa=True)
    ds.build(root, jobs, workers=1, progress=False)
    return root


def test_splits_use_disjoint_seeds():
    seeds = {s: set(ds.split_seeds(s, 1000)) for s in ('train', 'val', 'test')}
    assert not seeds['train'] & seeds['val'] and not seeds['train'] & seeds['test']
    assert not seeds['val'] & seeds['test']


def test_sampler_varies_rooms_cameras_and_light():
    specs = [sample_sequence(ds.SPLIT_SEED_BASE['train'] + i, 2.0, 5.0) for i in range(6)]
    for key in ('camera_height', 'hfov_deg', 'speed', 'pitch_deg'):
        assert len({s.params[key] for s in specs}) == 6
    assert len({s.scene.light_dir for s in specs}) == 6
    assert len({(s.scene.width, s.scene.depth) for s in specs}) == 6
    again = sample_sequence(specs[0].seed, 2.0, 5.0)
    np.testing.assert_array_equal(again.trajectory.poses, specs[0].trajectory.poses)


def test_shards_round_trip_exactly(data_root):
    frames = ds.load_split(data_root, 'train', 'frames')
    scenes = ds.load_split(data_root, 'train', 'scenes')
    assert len(frames) == 20 and len(scenes) == 2
    row = frames[13]
    spec = sample_sequence(int(row['scene_seed']), 2.0, 5.0, W, H)
    ref = render_full(spec.scene, spec.trajectory.poses[row['frame']], spec.K, W, H)
    np.testing.assert_array_equal(ds.decode_rgb(row['rgb']), ref.rgb)
    np.testing.assert_allclose(ds.decode_depth(row['depth']), ref.depth, atol=5e-4)
    np.testing.assert_array_equal(ds.decode_ids(row['ids']), ref.ids)
    np.testing.assert_allclose(np.reshape(row['pose'], (4, 4)), spec.trajectory.poses[row['frame']])
    scene = json.loads(scenes[0]['scene'])
    qa = json.loads(scenes[0]['qa'])
    assert scene['objects'] and 'lighting' in scene
    assert qa and {'question', 'answer', 'task'} <= set(qa[0])


def test_build_resumes_and_is_deterministic(data_root, tmp_path):
    jobs = ds.plan_jobs({'train': 1}, 1, {'train': 2.0}, 5.0, W, H, with_qa=False)
    first = ds.build(tmp_path, jobs, workers=1, progress=False)
    again = ds.build(tmp_path, jobs, workers=1, progress=False)  # nothing left to do
    assert first['scenes_rendered'] == 1 and again['scenes_rendered'] == 0
    a = ds.load_split(tmp_path, 'train')
    b = ds.load_split(data_root, 'train')
    assert a['rgb'][:10] == b['rgb'][:10] and a['depth'][:10] == b['depth'][:10]


def test_corrupt_shard_bytes_give_clear_errors():
    with pytest.raises(ValueError, match='unreadable'):
        ds.decode_rgb(b'not a png')
    with pytest.raises(ValueError, match='16-bit'):
        ds.decode_depth(ds.encode_png(np.zeros((4, 4, 3), np.uint8)))


def test_targets_are_consistent_geometry(data_root):
    seqs = GeometrySequences(data_root, 'train', 3, (32, 32), jitter=0.0)
    item = seqs[0]
    assert item['img'].shape == (3, 3, 32, 32) and item['valid'].all()
    # View 0 is the reference: its own and world points coincide, its pose is identity.
    torch.testing.assert_close(item['pts_world'][0], item['pts_self'][0])
    np.testing.assert_allclose(pose_encoding_to_matrix(item['pose'][0].numpy()), np.eye(4),
                               atol=1e-6)
    for v in range(3):
        rel = item['cam_to_first'][v]
        mapped = item['pts_self'][v] @ rel[:3, :3].T + rel[:3, 3]
        torch.testing.assert_close(mapped, item['pts_world'][v], atol=1e-4, rtol=1e-4)
        enc = matrix_to_pose_encoding(rel.double().numpy())
        np.testing.assert_allclose(pose_encoding_to_matrix(enc), rel.numpy(), atol=1e-5)


def test_torch_ray_maps_match_the_stream_ray_maps():
    K = np.array([[30.0, 0, 15.5], [0, 28.0, 11.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = (0.3, -0.1, 0.5)
    ref = ray_map(K, pose, (24, 32))
    got = ray_maps(torch.tensor(K)[None], torch.tensor(pose)[None], 24, 32)[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_objective_falls_when_overfitting_one_batch(data_root):
    torch.manual_seed(0)
    model = Cut3rModel(Cut3rConfig.small()).train()
    seqs = GeometrySequences(data_root, 'train', 2, model.config.img_size, jitter=0.0)
    batch = collate([seqs[0], seqs[1]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rollout = Rollout(model)
    losses = []
    for _ in range(12):
        loss, metrics = sequence_loss(rollout(batch['img']), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics['loss'])
    assert set(metrics) >= {'conf_loss', 'pose_loss', 'rgb_loss', 'l21_self_m'}
    assert losses[-1] < 0.6 * losses[0], losses


def test_learning_rate_schedule_and_stages():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    assert [cfg.stage_at(s) for s in (0, 34, 35, 69, 70, 99)] == [4, 4, 8, 8, 12, 12]


def test_trainer_writes_resumable_checkpoints_and_loadable_weights(data_root, tmp_path):
    cfg = TrainConfig(data=str(data_root), out=str(tmp_path / 'run'), steps=3,
                      stages=((2, 1.0),), views_per_step=4, warmup_steps=1, eval_every=3,
                      ckpt_every=1, log_every=1, val_sequences=1, val_views=2, workers=0,
                      ray_prob=0.5)
    summary = train(cfg)
    out = Path(cfg.out)
    assert summary['steps'] == 3 and (out / 'loss.png').stat().st_size > 1000
    rows = [json.loads(r) for r in (out / 'metrics.jsonl').read_text().splitlines()]
    assert any('val_delta_1_25' in r for r in rows)
    model = load_cut3r(out / 'best.safetensors')  # the node's strict loader
    assert model.config == Cut3rConfig.small()
    cfg.steps = 4
    assert train(cfg)['steps'] == 4  # resumed from step 3, one more step
    steps = [json.loads(r)['step'] for r in (out / 'metrics.jsonl').read_text().splitlines()
             if 'loss' in r]
    assert steps[-1] == 4 and steps.count(1) == 1
    # Fine-tuning starts from given weights: zero steps of training keep them exactly.
    tuned = TrainConfig(**{**cfg.__dict__, 'out': str(tmp_path / 'tune'), 'steps': 1,
                           'lr': 0.0, 'min_lr': 0.0, 'init_weights': str(out / 'best.safetensors')})
    train(tuned)
    start = load_cut3r(out / 'best.safetensors').state_dict()
    after = load_cut3r(tmp_path / 'tune' / 'best.safetensors').state_dict()
    assert all(torch.equal(start[k], after[k]) for k in start)


@pytest.mark.slow
def test_two_gloo_processes_train_with_ddp(data_root, tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MASTER_ADDR': '127.0.0.1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', str(29500 + os.getpid() % 1000), '-m',
           'vlm3r_ros.train.train_geometry', '--data', str(data_root), '--out',
           str(tmp_path / 'ddp'), '--steps', '2', '--stages', '2:1', '--views-per-step', '8',
           '--warmup-steps', '1', '--eval-every', '2', '--val-sequences', '1', '--val-views',
           '2', '--workers', '0', '--threads', '1']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'ddp' / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['steps'] == 2


def test_metrics_are_zero_for_perfect_predictions_and_grow_with_error():
    true = np.full((2, 8, 8), 2.0, np.float32)
    assert depth_scores(true, true)['abs_rel'] == 0.0
    scaled = depth_scores(true * 1.5, true)
    assert scaled['delta_1_25'] == 0.0 and scaled['delta_1_25_med'] == 1.0
    poses = np.tile(np.eye(4), (3, 1, 1))
    moved = poses.copy()
    moved[:, 0, 3] = [0.0, 0.1, 0.2]
    assert pose_scores(poses, poses)['ate_m'] == 0.0
    assert pose_scores(poses, moved)['rpe_m'] == pytest.approx(0.1)
    keys = [np.array([1, 2, 3]), np.array([1, 2]), np.array([4, 5, 6, 7])]
    assert sorted(select_keyframes(keys, 2)) == [0, 2]


def test_stretched_targets_follow_the_node_preprocessing(data_root):
    frames = ds.load_split(data_root, 'val')
    rec = frames[0]
    img, depth = ds.decode_rgb(rec['rgb']), ds.decode_depth(rec['depth'])
    K = np.reshape(rec['K'], (3, 3))
    out = sequence_tensors([img], [depth], [K], [np.reshape(rec['pose'], (4, 4))], (32, 48))
    k = out['K'][0].numpy()
    assert k[0, 0] == pytest.approx(K[0, 0] * 48 / W) and k[1, 1] == pytest.approx(K[1, 1] * 32 / H)


def test_training_code_never_imports_the_node_or_rclpy():
    code = ('import sys, vlm3r_ros.train.train_geometry, vlm3r_ros.train.eval_geometry, '
            'vlm3r_ros.train.dataset; '
            'print(any(m == "rclpy" or m.startswith("vlm3r_ros.node") for m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == 'False', out.stderr


def test_shipped_weights_keep_their_held_out_geometry_quality():
    """The shipped small CUT3R through the node's loader and stream on a held-out sequence.

    Measured at commit (seed test+901, 12 s): metric delta<1.25 0.60, AbsRel 0.23, RPE
    7.2 degrees per frame (24 s of the same seed, untrained: 0.00, 0.90, 13.7); with the
    node's tracked poses RPE 0.31 degrees and ATE 0.16 m (2026-12-07, rotation and
    translation refined together; 0.43 and 0.28 m before; encoder poses 0.51 m). The
    bounds are below the former and far from the latter.
    """
    from vlm3r_ros.models.loader import ModelSpec, load_bundle
    from vlm3r_ros.train.eval_geometry import Sequence3D, predict_model, prepare_truth
    assert CUT3R_SMALL.is_file(), 'the shipped weights are missing'
    bundle = load_bundle(ModelSpec(profile='tiny'))
    stream = bundle.new_geometry_stream()
    model = stream.model
    assert model.config == Cut3rConfig.small()
    spec = sample_sequence(ds.SPLIT_SEED_BASE['test'] + 901, 12.0, 5.0, 224, 168)
    imgs, depths = zip(*[render(spec.scene, p, spec.K, 224, 168)
                         for p in spec.trajectory.poses])
    seq = Sequence3D(spec.seed, list(imgs), list(depths), [spec.K] * len(imgs),
                     spec.trajectory.poses)
    truth = prepare_truth(seq, model.config.img_size, 8, 3)
    pred = predict_model(model, seq)
    d = depth_scores(pred.depth, truth.depth)
    p = pose_scores(pred.poses, truth.poses_rel)
    assert d['delta_1_25'] >= 0.45 and d['abs_rel'] <= 0.35, d
    assert p['rpe_deg'] <= 10.5, p
    # The node's RGB-only poses on tiny: tracked with the encoder's depth (camera_info K).
    tracked = predict_model(model, seq, 'tracking')
    t = pose_scores(tracked.poses, truth.poses_rel)
    print('encoder poses', p, 'tracked poses', t)
    assert t['rpe_deg'] <= 0.5 * p['rpe_deg'] and t['rpe_deg'] <= 2.0, t
    assert t['ate_m'] <= 0.35, t
