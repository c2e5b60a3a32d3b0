"""``vlm3r-train-geometry``: train the small CUT3R from RGB with CUT3R's objective.

    vlm3r-train-geometry --data data/geometry --out out/train_geometry
    torchrun --nproc_per_node 8 -m vlm3r_ros.train.train_geometry --device cuda ...

One config dataclass, one loop. Each step rolls the recurrent model over a batch of
view sequences (state and pose memory carried from view to view, gradients through
the whole rollout), as CUT3R trains; the number of views per sequence grows by stage
(4 -> 8 -> 12 by default) while the views per step stay constant. Some later views get
the ray map of their true camera (CUT3R's optional pose/intrinsics input), so that
path is trained too. Runs unchanged on CPU, one GPU, or several through torch DDP
(``torchrun``; gloo on CPU, NCCL on GPU). Writes ``<out>/ckpt.pt`` (resumable: model,
optimiser, step; tensors and plain values only, loaded with ``weights_only=True``),
``<out>/best.safetensors`` (best validation loss, official key layout with the
constructor string in the metadata, loadable by the node), ``<out>/metrics.jsonl``
and ``<out>/loss.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm3r_ros.models.cut3r.checkpoint import load_cut3r, save_official_layout
from vlm3r_ros.models.cut3r.config import Cut3rConfig
from vlm3r_ros.models.cut3r.model import Cut3rModel
from vlm3r_ros.train.distributed import rank0_decides, setup_distributed, shutdown
from vlm3r_ros.train.geometry_data import GeometrySequences, collate
from vlm3r_ros.train.geometry_loss import LossWeights, depth_metrics, sequence_loss


@dataclass
class TrainConfig:
    """Everything one geometry training run depends on."""

    data: str = 'data/geometry'
    out: str = 'out/train_geometry'
    model: str = 'small'  # a Cut3rConfig classmethod: small, tiny
    # Start from these weights (.safetensors/.pth, the node's loader; e.g. the shipped
    # cut3r_small.safetensors) instead of a random init: fine-tuning. A resumed run's
    # ckpt.pt takes precedence.
    init_weights: str = ''
    steps: int = 2400
    # (views per sequence, fraction of the steps), in order; views per step stay fixed.
    stages: tuple[tuple[int, float], ...] = ((4, 0.35), (8, 0.35), (12, 0.3))
    views_per_step: int = 48
    lr: float = 5e-4
    min_lr: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    alpha: float = 0.2
    pose_weight: float = 1.0
    rgb_weight: float = 1.0
    ray_prob: float = 0.25
    max_stride: int = 3
    jitter: float = 1.0
    seed: int = 0
    device: str = 'cpu'
    threads: int = 0  # torch intra-op threads on CPU (0 = all cores)
    workers: int = 1  # DataLoader processes
    log_every: int = 10
    eval_every: int = 200
    ckpt_every: int = 50
    val_sequences: int = 16
    val_views: int = 8
    max_minutes: float = 0.0  # stop early (and keep the best weights) after this long
    extra: dict[str, Any] = field(default_factory=dict)

    def stage_at(self, step: int) -> int:
        """Return the views per sequence at ``step``."""
        edge = 0.0
        for views, frac in self.stages:
            edge += frac * self.steps
            if step < edge:
                return views
        return self.stages[-1][0]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Return the learning rate: linear warm-up, then cosine decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def ray_maps(K: torch.Tensor, cam_to_first: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Return (B, 6, h, w) ray maps, computed as :func:`preprocess.ray_map` does."""
    v, u = torch.meshgrid(torch.arange(h, dtype=K.dtype, device=K.device),
                          torch.arange(w, dtype=K.dtype, device=K.device), indexing='ij')
    grid = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)
    dirs = grid @ torch.linalg.inv(K).transpose(1, 2)
    dirs = dirs @ cam_to_first[:, :3, :3].transpose(1, 2) + cam_to_first[:, None, :3, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origin = cam_to_first[:, None, :3, 3].expand_as(dirs)
    return torch.cat([origin, dirs], dim=-1).reshape(-1, h, w, 6).permute(0, 3, 1, 2)


class Rollout(nn.Module):
    """A recurrent CUT3R rollout as one ``forward`` (what DDP wraps)."""

    def __init__(self, model: Cut3rModel) -> None:
        """Wrap ``model``."""
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor, rays: torch.Tensor | None = None,
                use_ray: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        """Roll over (B, V, 3, h, w) images; return one output dict per view.

        ``rays`` (B, V, 6, h, w) and ``use_ray`` (B, V) optionally give views a ray map
        (never the first view, as in CUT3R). The first view also predicts colours.
        """
        b, views = img.shape[:2]
        m = self.model
        state, mem = m.init_state(b), m.init_mem(b)
        outputs = []
        ones = torch.ones(b, dtype=torch.bool, device=img.device)
        for v in range(views):
            ray = None if rays is None or v == 0 else rays[:, v]
            out = m.step(img[:, v], state, mem, is_first=ones if v == 0 else ~ones, update=ones,
                         ray_map=ray, use_ray=None if ray is None else use_ray[:, v],
                         with_rgb=v == 0)
            state, mem = out.state, out.mem
            outputs.append({'pts_self': out.pts_self, 'conf_self': out.conf_self,
                            'pts_world': out.pts_world, 'conf': out.conf,
                            'camera_pose': out.camera_pose, 'rgb': out.rgb})
        return outputs


def build_model(name: str, seed: int) -> Cut3rModel:
    """Return a freshly initialised model of the named config (seeded)."""
    maker = getattr(Cut3rConfig, name, None)
    if maker is None or name.startswith('_') or name.startswith('from'):
        raise ValueError(f'unknown model config {name!r}')
    torch.manual_seed(seed)
    return Cut3rModel(maker())


@torch.no_grad()
def validate(model: Cut3rModel, val: GeometrySequences, device: torch.device,
             weights: LossWeights) -> dict[str, float]:
    """Return the mean validation loss and metric depth scores over ``val``."""
    model.eval()
    rollout = Rollout(model)
    totals: dict[str, float] = {}
    preds, trues, masks = [], [], []
    for i in range(len(val)):
        batch = {k: v.to(device) for k, v in collate([val[i]]).items()}
        outs = rollout(batch['img'])
        _, metrics = sequence_loss(outs, batch, weights)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v / len(val)
        preds.append(torch.stack([o['pts_self'][0, ..., 2] for o in outs]).cpu())
        trues.append(batch['pts_self'][0, ..., 2].cpu())
        masks.append(batch['valid'][0].cpu())
    dm = depth_metrics(torch.cat(preds), torch.cat(trues), torch.cat(masks))
    model.train()
    return {**{f'val_{k}': v for k, v in totals.items()},
            'val_abs_rel': dm['abs_rel'], 'val_delta_1_25': dm['delta_1_25']}


def plot_metrics(path: Path, out: Path) -> None:
    """Write the loss curves of a metrics.jsonl to ``out`` (PNG)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in path.read_text(encoding='utf8').splitlines() if line]
    train = [r for r in rows if 'loss' in r]
    val = [r for r in rows if 'val_loss' in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r['step'] for r in train], [r['loss'] for r in train], label='train loss')
    axes[0].plot([r['step'] for r in val], [r['val_loss'] for r in val], 'o-', label='val loss')
    axes[0].set_xlabel('step')
    axes[0].legend()
    axes[1].plot([r['step'] for r in train], [r['l21_self_m'] for r in train], label='train L21 self (m)')
    axes[1].plot([r['step'] for r in val], [r['val_l21_self_m'] for r in val], 'o-', label='val L21 self (m)')
    axes[1].plot([r['step'] for r in val], [r['val_trans_err_m'] for r in val], 's-', label='val trans. err (m)')
    axes[1].set_xlabel('step')
    axes[1].legend()
    axes[2].plot([r['step'] for r in val], [r['val_delta_1_25'] for r in val], 'o-', label='val delta<1.25')
    axes[2].set_ylim(0, 1)
    axes[2].set_xlabel('step')
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; return the final summary (also in ``<out>/summary.json``)."""
    rank, world, device = setup_distributed(cfg.device)
    if device.type == 'cpu' and cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg.model, cfg.seed)
    if cfg.init_weights:
        start = load_cut3r(cfg.init_weights)  # strict: the config must match cfg.model
        if start.config != model.config:
            raise ValueError(f'{cfg.init_weights} is a {start.config} model, not {cfg.model}')
        model.load_state_dict(start.state_dict())
    model = model.to(device).train()
    rollout: nn.Module = Rollout(model)
    if world > 1:
        rollout = nn.parallel.DistributedDataParallel(rollout, find_unused_parameters=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'token' not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or 'token' in n]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': cfg.weight_decay},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=cfg.lr,
                            betas=(0.9, 0.95))
    step, best, earlier_minutes = 0, math.inf, 0.0
    ckpt_path = out / 'ckpt.pt'
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt['model'])
        opt.load_state_dict(ckpt['optimizer'])
        step, best = int(ckpt['step']), float(ckpt['best_val'])
        earlier_minutes = float(ckpt.get('minutes', 0.0))  # wall time of earlier legs
        if rank == 0:
            print(f'resumed from {ckpt_path} at step {step}', flush=True)
    weights = LossWeights(cfg.alpha, cfg.pose_weight, cfg.rgb_weight)
    image_size = model.config.img_size
    val = GeometrySequences(cfg.data, 'val', cfg.val_views, image_size, jitter=0.0,
                            seed=cfg.seed + 1, length=cfg.val_sequences)
    log = (out / 'metrics.jsonl').open('a', encoding='utf8') if rank == 0 else None
    started = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed + 7 * step)
    loader_iter, loader_views, epoch = None, 0, step
    t_last, views_done = time.monotonic(), 0
    while step < cfg.steps:
        views = cfg.stage_at(step)
        if loader_iter is None or loader_views != views:
            batch_size = max(1, cfg.views_per_step // views // world)
            ds = GeometrySequences(cfg.data, 'train', views, image_size, cfg.max_stride,
                                   cfg.jitter, seed=cfg.seed, length=10 ** 9)
            ds.set_epoch(epoch)
            # Item indices are drawn per rank and per step: resuming at any step
            # continues with fresh, reproducible windows.
            sampler = torch.utils.data.RandomSampler(range(len(ds.scenes) * 1000), generator=gen)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch_size, sampler=[rank + world * i for i in sampler],
                num_workers=cfg.workers, collate_fn=collate, persistent_workers=False,
                prefetch_factor=4 if cfg.workers else None)
            loader_iter, loader_views = iter(loader), views
        batch = {k: v.to(device, non_blocking=True) for k, v in next(loader_iter).items()}
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group['lr'] = lr
        b, v = batch['img'].shape[:2]
        h, w = image_size
        rays = use_ray = None
        # Ray maps on a share of the steps only (half the views there): the ray-map
        # encoder costs as much as the image encoder, and RGB alone is the main use.
        if cfg.ray_prob > 0 and float(torch.rand(1, generator=gen)) < min(1.0, 2 * cfg.ray_prob):
            rays = ray_maps(batch['K'].flatten(0, 1), batch['cam_to_first'].flatten(0, 1),
                            h, w).reshape(b, v, 6, h, w)
            use_ray = torch.rand(b, v, generator=gen).to(device) < 0.5
        outs = rollout(batch['img'], rays, use_ray)
        loss, metrics = sequence_loss(outs, batch, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        step += 1
        views_done += b * v * world
        if rank == 0 and log is not None:
            if step % cfg.log_every == 0 or step == 1:
                now = time.monotonic()
                row = {'step': step, 'views': views, 'lr': lr, 'grad_norm': grad_norm,
                       'views_per_s': views_done / max(now - t_last, 1e-9),
                       'elapsed_min': (now - started) / 60.0, **metrics}
                t_last, views_done = now, 0
                log.write(json.dumps(row) + '\n')
                log.flush()
                print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                               for k, v in row.items()), flush=True)
            timed_out = cfg.max_minutes and (time.monotonic() - started) / 60 >= cfg.max_minutes
            if step % cfg.eval_every == 0 or step == cfg.steps or timed_out:
                vm = validate(model, val, device, weights)
                log.write(json.dumps({'step': step, **vm}) + '\n')
                log.flush()
                print(' '.join(f'{k}={v:.4g}' for k, v in vm.items()), flush=True)
                if vm['val_loss'] < best:
                    best = vm['val_loss']
                    save_official_layout(model, out / 'best.safetensors', metadata={
                        'step': str(step), 'val_loss': f'{best:.5f}'})
                plot_metrics(out / 'metrics.jsonl', out / 'loss.png')
            if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
                tmp = ckpt_path.with_suffix('.tmp')
                torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(),
                            'step': step, 'best_val': best,
                            'minutes': earlier_minutes + (time.monotonic() - started) / 60,
                            'config': json.dumps(dataclasses.asdict(cfg))}, tmp)
                tmp.replace(ckpt_path)
            if timed_out:
                print(f'stopping at step {step}: max_minutes {cfg.max_minutes} reached',
                      flush=True)
                break
        if world > 1 and rank0_decides(bool(cfg.max_minutes) and (
                time.monotonic() - started) / 60 >= cfg.max_minutes, world, device):
            break
    leg = (time.monotonic() - started) / 60
    summary = {'steps': step, 'best_val_loss': best, 'minutes': earlier_minutes + leg,
               'minutes_this_leg': leg,
               'world_size': world, 'device': str(device), 'config': dataclasses.asdict(cfg)}
    if rank == 0:
        (out / 'summary.json').write_text(json.dumps(summary, indent=1), encoding='utf8')
        if log is not None:
            log.close()
    shutdown(world)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: one ``--name value`` flag per :class:`TrainConfig` field."""
    p = argparse.ArgumentParser(prog='vlm3r-train-geometry', description=__doc__.splitlines()[0])
    for f in dataclasses.fields(TrainConfig):
        if f.name in ('extra',):
            continue
        default = f.default
        if f.name == 'stages':
            p.add_argument('--stages', default=None,
                           help='views:fraction,... (default 4:0.35,8:0.35,12:0.3)')
            continue
        kind = type(default)
        p.add_argument(f'--{f.name.replace("_", "-")}', type=kind, default=default,
                       help=f'default {default}')
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Return the TrainConfig given by command-line flags."""
    args = vars(build_parser().parse_args(argv))
    stages = args.pop('stages')
    cfg = TrainConfig(**args)
    if stages:
        cfg.stages = tuple((int(a), float(b)) for a, b in
                           (s.split(':') for s in stages.split(',')))
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Train; return 0."""
    train(config_from_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
