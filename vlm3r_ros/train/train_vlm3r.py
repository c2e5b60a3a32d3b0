"""``vlm3r-train``: 3D reconstructive instruction tuning of the fused model (VLM-3R's recipe).

    vlm3r-train --data data/vlm3r --out out/train_vlm3r            # small model, full LLM
    vlm3r-train --data data/vlm3r --out out/train_vlm3r_blind --blind   # its blind twin
    vlm3r-train --profile vlm3r-7b --base-model-dir BASE --lora-dir RELEASE \\
        --cut3r CUT3R.pth --lora-r 128 --lora-alpha 256 --lr 2e-5 --device cuda
    torchrun --nproc_per_node 8 -m vlm3r_ros.train.train_vlm3r ... --device cuda  # DDP

As VLM-3R: the vision tower and CUT3R are frozen (their features are computed once per
scene, `qa_data.build_feature_cache`); the fusion block, projector and LLM train with an
answer-only loss (prompt and visual tokens masked) on spatial QA. The LLM trains fully at
the small size, through LoRA (r 128 / alpha 256 on every Linear but lm_head) at 7B. Items
are debiased first (`qa_debias`) so that text priors cannot stand in for looking; the blind
twin trains on the same items without frames. The prompt is the node's
(`answers.build_prompt` inside the qwen_1_5 template), so what is trained is what is served.

Writes ``<out>/ckpt.pt`` (resumable: trainable tensors, optimiser, step; loaded with
``weights_only=True``), ``<out>/metrics.jsonl``, ``<out>/items.json`` (the debias report and
item counts) and ``<out>/release/{base,adapter}``: the official VLM-3R release layout (base
directory + ``non_lora_trainables`` + LoRA adapter) that the node's unchanged loader reads.
Under ``torchrun`` every process draws its share of the global ``--batch`` and the
gradients are averaged across processes (gloo on CPU, NCCL on GPU); rank 0 logs, evaluates,
checkpoints and exports.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.models.profiles import get_profile
from vlm3r_ros.models.vlm3r.checkpoint import save_base_checkpoint, save_vlm3r_adapter
from vlm3r_ros.models.vlm3r.model import Vlm3rModel, frame_tokens_from_features
from vlm3r_ros.models.vlm3r.prompt import qwen_1_5_prompt
from vlm3r_ros.models.vlm3r.tokenizer import IM_END, plain_token_ids
from vlm3r_ros.pipeline.answers import build_prompt
from vlm3r_ros.train import qa_data
from vlm3r_ros.train.distributed import (average_gradients, barrier, rank0_decides,
                                         setup_distributed, shutdown)
from vlm3r_ros.train.lora_train import inject_lora, lora_pairs, remove_lora
from vlm3r_ros.train.qa_debias import debias
from vlm3r_ros.train.qa_grounding import listing_items, presence_items
from vlm3r_ros.weights import CUT3R_SMALL


@dataclass
class TrainConfig:
    """Everything one instruction-tuning run depends on."""

    data: str = 'data/vlm3r'
    out: str = 'out/train_vlm3r'
    profile: str = 'tiny'
    vision: str = 'out/pretrain_vision/vision.safetensors'  # tiny: the pretrained tower
    cut3r: str = ''  # '' = the shipped small CUT3R (tiny); required for vlm3r-7b
    base_model_dir: str = ''  # vlm3r-7b: LLaVA-NeXT-Video base in the official layout
    lora_dir: str = ''  # vlm3r-7b: a VLM-3R release to start from (optional)
    # A release directory (base/ + adapter/) whose LLM starts this run, e.g. the trained
    # blind twin: the fused model then starts text-first, as VLM-3R starts from a pretrained
    # LLM, and the multimodal tuning only has to add what the frames tell.
    init_llm_from: str = ''
    blind: bool = False  # train without frames: the blind twin
    steps: int = 3000
    batch: int = 16
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora_r: int = 0  # 0 = full LLM tuning (small); 128 as the reference at 7B
    lora_alpha: float = 256.0
    lora_dropout: float = 0.05
    debias_margin: float = 0.02
    # Grounding aid (qa_grounding): share of each batch that is "is there a X" items, falling
    # linearly from ground_share to ground_share_end over the run; 0 = VSI items only.
    ground_share: float = 0.5
    ground_share_end: float = 0.1
    ground_fixed_order: bool = False  # grounding options always 'A. yes', 'B. no'
    # Which grounding items train: 'yes_no' ("is there a X"), 'listing' ("which of these
    # objects can be seen": a label per category in one item) or 'both'. Validation
    # always scores the yes/no items (a direct "does it look" number).
    grounding: str = 'yes_no'
    max_scenes: int = 0  # per split, 0 = all (smoke tests)
    eval_every: int = 500
    keep: str = 'last'  # the release exported: 'last' step or 'best' validation step
    val_items: int = 400
    seed: int = 0
    device: str = 'cpu'
    threads: int = 1
    cache_workers: int = 1  # processes that build the frozen-tower feature caches
    cache_only: bool = False  # build the caches and stop (then train runs in parallel)
    max_minutes: float = 0.0  # stop cleanly after this much training time (0 = none)
    # Tiny from scratch: scale the projector's output layer at init so visual tokens start
    # at the RMS of the text embeddings (a random projector emits tokens ~20x larger, which
    # swamp the question tokens' identity in the residual stream: the model then ignores
    # the frames). 0 = leave the init as it is.
    match_visual_scale: float = 1.0
    log_every: int = 25


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def grounding_share(cfg: TrainConfig, step: int) -> float:
    """Return the share of grounding items in the batch at ``step`` (0 for the blind twin)."""
    if cfg.blind:
        return 0.0
    t = min(1.0, step / max(1, cfg.steps))
    return cfg.ground_share + (cfg.ground_share_end - cfg.ground_share) * t


def grounding_items(cache: qa_data.FeatureCache | None, seed: int,
                    fixed_order: bool = False, kind: str = 'yes_no') -> list[QAItem]:
    """Return the grounding items of a cached split (none without presence labels).

    Raises ValueError for an unknown ``kind`` (see `TrainConfig.grounding`).
    """
    if kind not in ('yes_no', 'listing', 'both'):
        raise ValueError(f"grounding must be 'yes_no', 'listing' or 'both', not {kind!r}")
    if cache is None or cache.presence is None:
        return []
    presence = cache.presence.numpy()
    items = [] if kind == 'listing' else presence_items(cache.seeds, presence, seed,
                                                        fixed_order)
    return items + ([] if kind == 'yes_no' else listing_items(cache.seeds, presence))


def target_text(item: QAItem) -> str:
    """Return the answer the model is taught: the option letter, or the number (or text)."""
    return str(item.answer) if item.answer_type == 'option' else item.answer_text


def item_prompt(item: QAItem) -> str:
    """Return the user text the node builds for this item."""
    return build_prompt(item.question, item.options, item.answer_type)


def build_model(cfg: TrainConfig) -> Vlm3rModel:
    """Return the model to tune: tiny with the pretrained tower, or a real checkpoint."""
    if cfg.profile == 'tiny':
        model = Vlm3rModel.random(get_profile('tiny', device=cfg.device), seed=cfg.seed)
        if cfg.vision:
            model.net.vision_tower.load_state_dict(load_file(cfg.vision))
        if cfg.init_llm_from:
            init_llm(model, cfg.init_llm_from)
        return model
    if not cfg.base_model_dir:
        raise SystemExit(f'--base-model-dir is needed for profile {cfg.profile!r}')
    return Vlm3rModel.from_profile(cfg.profile, base_model_dir=cfg.base_model_dir,
                                   lora_dir=cfg.lora_dir or None, device=cfg.device,
                                   dtype='bfloat16' if cfg.device != 'cpu' else 'float32')


def init_llm(model: Vlm3rModel, release: str | Path) -> None:
    """Copy the LLM (embeddings, layers, lm_head) of a release directory into ``model``.

    The release is read by the node's loader (`load_vlm3r`), so any directory it serves can
    start a run. Raises CheckpointError when it does not load, RuntimeError when its LLM has
    other shapes than ``model``'s.
    """
    from vlm3r_ros.models.vlm3r.checkpoint import load_vlm3r
    root = Path(release)
    source = load_vlm3r(root / 'base', root / 'adapter', profile=model.profile)
    model.net.language_model.load_state_dict(source.net.language_model.state_dict())


class Batcher:
    """Turns QA items (+ cached frame features) into padded LLM inputs with answer labels."""

    def __init__(self, model: Vlm3rModel, cache: qa_data.FeatureCache | None, blind: bool
                 ) -> None:
        """Tokenise the fixed template parts once."""
        self.model = model
        self.cache = cache
        self.rows = cache.index() if cache is not None else {}
        self.blind = blind
        if model.profile.fusion != 'cross_attention' or model.profile.geometry_select != 'all':
            raise ValueError('vlm3r-train caches CUT3R tokens for cross-attention fusion over '
                             "all geometry tokens (geometry_select 'all')")
        tok = model.tokenizer
        chat = qwen_1_5_prompt('x', model.profile.system_prompt, has_image=not blind)
        self.prefix = tok(chat.prefix, add_special_tokens=False)['input_ids']
        self.tail = tok(chat.tail, add_special_tokens=False)['input_ids']
        self.end = tok.convert_tokens_to_ids(IM_END)

    def frame_tokens(self, seeds: Sequence[int]) -> torch.Tensor:
        """Return (B, frames * tokens_per_frame, hidden) visual tokens, with gradients."""
        assert self.cache is not None
        net, prof = self.model.net, self.model.profile
        rows = torch.tensor([self.rows[s] for s in seeds])
        vision = self.cache.vision[rows].to(self.model.device, torch.float32)
        geometry = self.cache.geometry[rows].to(self.model.device, torch.float32)
        b, n = vision.shape[:2]
        geo = geometry.flatten(0, 1) if net.fusion_block is not None else None
        tokens = frame_tokens_from_features(net, prof, vision.flatten(0, 1), geo)
        return tokens.view(b, n * tokens.shape[1], tokens.shape[2]).to(self.model.dtype)

    def sequences(self, items: Sequence[QAItem]) -> list[tuple[torch.Tensor, list[int]]]:
        """Return per item (input embeddings (L, hidden), answer token ids at the end)."""
        tok = self.model.tokenizer
        embed = self.model.net.language_model.get_input_embeddings()
        device = self.model.device
        visual = None if self.blind else self.frame_tokens([qa_data.scene_of(i) for i in items])
        out = []
        for b, item in enumerate(items):
            body = '\n' + item_prompt(item) if not self.blind else item_prompt(item)
            user = plain_token_ids(tok, body)
            answer = tok(target_text(item), add_special_tokens=False)['input_ids'] + [self.end]
            head = torch.tensor(self.prefix, device=device)
            rest = torch.tensor(user + self.tail + answer, device=device)
            parts = [embed(head)] + ([visual[b]] if visual is not None else []) + [embed(rest)]
            out.append((torch.cat(parts, dim=0), answer))
        return out

    def loss(self, items: Sequence[QAItem]) -> torch.Tensor:
        """Return the mean answer-token cross-entropy of a batch (prompt and frames masked).

        Sequences run one at a time: without padding the LLM takes its causal attention
        fast path, and only the answer positions go through lm_head.
        """
        lm = self.model.net.language_model
        total = torch.zeros((), device=self.model.device)
        count = 0
        for seq, answer in self.sequences(items):
            hidden = lm.model(inputs_embeds=seq[None], use_cache=False).last_hidden_state[0]
            n = len(answer)
            logits = lm.lm_head(hidden[-n - 1:-1]).float()
            target = torch.tensor(answer, device=logits.device)
            total = total + torch.nn.functional.cross_entropy(logits, target, reduction='sum')
            count += n
        return total / max(1, count)


def match_visual_scale(model: Vlm3rModel, batcher: Batcher, seeds: Sequence[int],
                       factor: float = 1.0) -> float:
    """Scale the projector's last Linear so the visual tokens of ``seeds`` have ``factor``
    times the RMS norm of the LLM's input embeddings; return the scale applied. Every rank
    computes the same scale from the same weights and features. (A resumed run then loads
    its trained tensors over this.)"""
    with torch.no_grad():
        tokens = batcher.frame_tokens(seeds).float()
        text = model.net.language_model.get_input_embeddings().weight.float()
        ratio = factor * float(text.norm(dim=-1).pow(2).mean().sqrt()
                               / tokens.norm(dim=-1).pow(2).mean().sqrt())
        last = model.net.mm_projector[2]
        last.weight.mul_(ratio)
        last.bias.mul_(ratio)
    return ratio


def trainable_parameters(model: Vlm3rModel, cfg: TrainConfig) -> tuple[list[torch.nn.Parameter],
                                                                        dict[str, Any]]:
    """Freeze the vision tower; return the parameters to train and the LoRA wrappers."""
    net = model.net
    for p in net.parameters():
        p.requires_grad_(False)
    wrapped: dict[str, Any] = {}
    if cfg.lora_r > 0:
        wrapped = inject_lora(net.language_model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    else:
        for p in net.language_model.parameters():
            p.requires_grad_(True)
    if not cfg.blind:
        for module in (net.fusion_block, net.mm_projector):
            if module is not None:
                for p in module.parameters():
                    p.requires_grad_(True)
        net.image_newline.requires_grad_(True)
    params = [p for p in net.parameters() if p.requires_grad]
    params += [p for w in wrapped.values() for p in (w.lora_A, w.lora_B)]
    return params, wrapped


def prepare_data(cfg: TrainConfig, model: Vlm3rModel, out: Path
                 ) -> tuple[list[QAItem], list[QAItem], qa_data.FeatureCache | None,
                            qa_data.FeatureCache | None]:
    """Debias the items and build (or reuse) the feature caches; returns train/val items."""
    man = qa_data.manifest(cfg.data)
    splits = {s: qa_data.load_items(cfg.data, s) for s in ('train', 'val', 'test')}
    limit = cfg.max_scenes or None
    flat = {s: qa_data.flatten(v, sorted(v)[:limit]) for s, v in splits.items()}
    train, held, report = debias(flat['train'], {'val': flat['val'], 'test': flat['test']},
                                 margin=cfg.debias_margin, seed=cfg.seed)
    (out / 'items.json').write_text(json.dumps(
        {'debias': {k: [r.to_dict() for r in v] for k, v in report.items()},
         'items': {'train': len(train), **{k: len(v) for k, v in held.items()}}}, indent=1),
        encoding='utf8')
    if cfg.blind:
        return train, held['val'], None, None
    caches = []
    # --cache-only also prepares the test split's cache that vlm3r-eval-model reads.
    for split in ('train', 'val') + (('test',) if cfg.cache_only else ()):
        tag = f'-{cfg.max_scenes}' if cfg.max_scenes else ''
        path = Path(cfg.data) / f'features-{split}-{cfg.profile}{tag}.safetensors'
        tower = model.net.vision_tower.state_dict()
        meta = {'vision': cfg.vision, 'vision_sha256': qa_data.tower_digest(tower),
                'cut3r': cfg.cut3r or str(CUT3R_SMALL), 'num_frames': str(man['qa_frames'])}
        if path.is_file():
            cache = qa_data.cache_for_tower(path, cfg.data, split, model.profile, tower)
        else:
            cache = qa_data.build_feature_cache_parallel(
                cfg.data, split, model.profile, model.net.vision_tower.state_dict(),
                cfg.cut3r or CUT3R_SMALL, int(man['qa_frames']), max_scenes=limit,
                workers=cfg.cache_workers)
            cache.save(path, meta)
        caches.append(cache)
    return train, held['val'], caches[0], caches[1]


def export_release(model: Vlm3rModel, wrapped: dict[str, Any], cfg: TrainConfig,
                   directory: Path) -> None:
    """Write the official release layout: ``base/`` + ``adapter/`` (non-LoRA + LoRA)."""
    pairs = lora_pairs(wrapped) if wrapped else None
    if wrapped:
        remove_lora(model.net.language_model, wrapped)
    save_base_checkpoint(model, directory / 'base')
    # Full tuning (small LLM): the tuned LLM lives in base/, the adapter is rank-8 zero-B
    # (an identity merge), so the directory is still exactly what the loader expects.
    save_vlm3r_adapter(model, directory / 'adapter', lora_pairs=pairs,
                       r=cfg.lora_r or 8, alpha=cfg.lora_alpha if pairs else 16.0,
                       non_lora_format='safetensors')
    if wrapped:  # put the wrappers back so training could continue
        for local, layer in wrapped.items():
            parent_name, _, child = local.rpartition('.')
            setattr(model.net.language_model.get_submodule(parent_name), child, layer)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the tuning; return the final validation metrics."""
    from vlm3r_ros.train.eval_vlm3r import evaluate_items  # the evaluator imports this module
    rank, world, device = setup_distributed(cfg.device)
    if world > 1:
        cfg = dataclasses.replace(cfg, device=str(device))
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # every rank starts from the same weights
    model = build_model(cfg)
    if rank != 0:
        barrier(world)  # rank 0 builds (or checks) the caches first
    train_items, val_items, train_cache, val_cache = prepare_data(cfg, model, out)
    if rank == 0:
        barrier(world)
    if cfg.cache_only:
        shutdown(world)
        return {}
    if cfg.keep not in ('best', 'last'):
        raise SystemExit(f"--keep must be 'best' or 'last', not {cfg.keep!r}")
    if cfg.batch % world:
        raise SystemExit(f'--batch {cfg.batch} must be a multiple of the {world} processes')
    try:
        ground_train = grounding_items(train_cache, cfg.seed, cfg.ground_fixed_order,
                                       cfg.grounding)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    ground_val = grounding_items(val_cache, cfg.seed + 1, cfg.ground_fixed_order)
    if grounding_share(cfg, 0) > 0 and not ground_train:
        raise SystemExit('ground_share > 0 needs a feature cache with presence labels '
                         '(rebuild it: delete the features-*.safetensors files)')
    params, wrapped = trainable_parameters(model, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batcher = Batcher(model, train_cache, cfg.blind)
    if cfg.profile == 'tiny' and cfg.match_visual_scale and train_cache is not None:
        ratio = match_visual_scale(model, batcher, train_cache.seeds[:8], cfg.match_visual_scale)
        if rank == 0:
            print(f'projector output scaled by {ratio:.4f} (visual tokens at the text '
                  'embeddings\' RMS)', flush=True)
    step, minutes = 0, 0.0
    best: dict[str, Any] = {'val': -math.inf, 'step': 0}  # the exported release (keep best)
    ckpt_path = out / 'ckpt.pt'
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        for p, t in zip(params, ckpt['params']):
            p.data.copy_(t)
        opt.load_state_dict(ckpt['optimizer'])
        step, minutes = int(ckpt['step']), float(ckpt['minutes'])
        best = {'val': float(ckpt.get('best_val', -math.inf)),
                'step': int(ckpt.get('best_step', 0))}
        print(f'resumed at step {step}', flush=True)
    # Per rank and per resumed step: a resume draws fresh batches, ranks draw different ones.
    rng = np.random.default_rng([cfg.seed, step, rank])
    val_rng = np.random.default_rng(cfg.seed + 1)
    val_subset = [val_items[i] for i in sorted(val_rng.permutation(len(val_items))
                                               [:cfg.val_items])]
    lead = rank == 0  # logs, evaluates, checkpoints and exports
    log = (out / 'metrics.jsonl').open('a', encoding='utf8') if lead else None
    if lead:
        print(f'{len(train_items)} training items (+{len(ground_train)} grounding), '
              f'{len(val_subset)} val items (+{len(ground_val)} grounding), '
              f'{sum(p.numel() for p in params)} trainable parameters, {world} process(es)',
              flush=True)
    per_rank = cfg.batch // world  # cfg.batch is the global batch
    model.net.train()
    model.net.vision_tower.eval()
    t0 = time.monotonic() - minutes * 60
    metrics: dict[str, Any] = {}

    def record(row: dict[str, Any]) -> None:
        """Append a metrics row to metrics.jsonl and print it (rank 0 only calls this)."""
        assert log is not None
        log.write(json.dumps(row) + '\n')
        log.flush()
        print(json.dumps(row), flush=True)

    def save() -> None:
        torch.save({'params': [p.detach().cpu() for p in params],
                    'optimizer': opt.state_dict(), 'step': step,
                    'minutes': (time.monotonic() - t0) / 60,
                    'best_val': best['val'], 'best_step': best['step']}, out / 'ckpt.tmp')
        (out / 'ckpt.tmp').replace(ckpt_path)

    while step < cfg.steps:
        for group in opt.param_groups:
            group['lr'] = learning_rate(cfg, step)
        n_ground = int(rng.binomial(per_rank, grounding_share(cfg, step)))
        batch = [train_items[i] for i in rng.integers(len(train_items),
                                                      size=per_rank - n_ground)]
        batch += [ground_train[i] for i in rng.integers(len(ground_train), size=n_ground)]
        loss = batcher.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, world)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        elapsed = (time.monotonic() - t0) / 60
        if lead and (step % cfg.log_every == 0 or step == 1):
            record({'step': step, 'loss': round(loss.item(), 4),
                    'lr': learning_rate(cfg, step), 'minutes': round(elapsed, 2)})
        last = step == cfg.steps or rank0_decides(
            bool(cfg.max_minutes) and elapsed > cfg.max_minutes, world, device)
        if lead and (step % cfg.eval_every == 0 or last):
            model.net.eval()
            metrics = evaluate_items(model, val_subset, val_cache, blind=cfg.blind).summary()
            if ground_val:
                metrics['grounding'] = evaluate_items(model, ground_val, val_cache).summary()[
                    'overall']
            if cfg.keep == 'best' and metrics['overall'] > best['val']:
                # Early stopping on the validation split (never the test split).
                best = {'val': metrics['overall'], 'step': step}
                export_release(model, wrapped, cfg, out / 'release')
            model.net.train()
            model.net.vision_tower.eval()
            record({'step': step, 'val': metrics, 'minutes': round(elapsed, 2),
                    'best_step': best['step']})
            save()
        if last:
            break
    if log is not None:
        log.close()
    if lead:
        model.net.eval()
        if cfg.keep == 'last' or not (out / 'release' / 'base').is_dir():
            export_release(model, wrapped, cfg, out / 'release')
            best = {'val': metrics.get('overall', math.nan), 'step': step}
        (out / 'config.json').write_text(json.dumps(dataclasses.asdict(cfg) | {
            'world_size': world, 'exported_step': best['step'],
            'exported_val': best['val']}, indent=1), encoding='utf8')
    barrier(world)
    shutdown(world)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: one flag per `TrainConfig` field."""
    p = argparse.ArgumentParser(prog='vlm3r-train', description=__doc__.splitlines()[0])
    for f in dataclasses.fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        if isinstance(f.default, bool):
            p.add_argument(flag, action='store_true', default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``vlm3r-train``; return 0."""
    args = build_parser().parse_args(argv)
    train(TrainConfig(**vars(args)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
