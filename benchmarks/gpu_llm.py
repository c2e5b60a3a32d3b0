"""The fused-LMM stage of ``benchmarks/gpu_realsize.py``: encoding, prefill, decode, prefix hits.

The model is the profile's architecture with random weights allocated on the device
(``build_network(init='empty')`` + ``randomize_``, the path ``Vlm3rModel.random`` takes off
the CPU) and the tiny tokenizer (the vocabulary rows are the profile's). Every question
decodes a fixed number of tokens (the model's stop-token set is emptied for the stage,
``fixed_length``): random weights would stop at an arbitrary point otherwise.

Floors are analytic for the language model (Qwen2: projections, causal attention, LM head
where logits are taken; bytes: the weights read once plus the KV cache read) and counted
with ``FlopCounterMode`` for the per-frame encoding.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_timing import Clock, MemoryMeter, count_flops, floor_ms, module_bytes, ratio
from vlm3r_ros.models.profiles import Profile, get_profile
from vlm3r_ros.models.vlm3r.model import Vlm3rModel
from vlm3r_ros.models.vlm3r.network import build_network, randomize_, torch_dtype
from vlm3r_ros.models.vlm3r.tokenizer import build_tiny_tokenizer

QUESTION = ('These are frames of a video.\nMeasuring from the closest point of each object, '
            'what is the direct distance between the bed and the tv (in meters)?\n'
            'Please answer the question using a single word or phrase.')
FOLLOW_UP = ('These are frames of a video.\nHow many chair(s) are in this room?\n'
             'Please answer the question using a single word or phrase.')


def build_model(profile: Profile, device: torch.device) -> Vlm3rModel:
    """Build ``profile``'s LMM with random weights allocated directly on ``device``."""
    tokenizer = build_tiny_tokenizer()
    vocab = profile.llm_vocab_size or len(tokenizer)
    net = build_network(profile, vocab, device=device, dtype=torch_dtype(profile.dtype),
                        init='empty')
    randomize_(net, seed=0)
    return Vlm3rModel(net, tokenizer, profile)


@contextlib.contextmanager
def fixed_length(model: Vlm3rModel) -> Iterator[None]:
    """Decode exactly ``max_new_tokens`` inside the block (no stop token ends an answer).

    A measurement device for random weights: it empties the instance's stop-token set (the
    one ``answer`` checks) and restores it on exit; the model code is unchanged.
    """
    saved = model._stop_ids  # noqa: SLF001 - benchmark-only, restored below
    model._stop_ids = frozenset()  # noqa: SLF001
    try:
        yield
    finally:
        model._stop_ids = saved  # noqa: SLF001


# -------------------------------------------------------------------------- analytic floors
def _lm_shape(profile: Profile) -> dict[str, int]:
    """Return the Qwen2 numbers the cost model needs."""
    head_dim = profile.llm_hidden_size // profile.llm_num_heads
    return {'d': profile.llm_hidden_size, 'kv': profile.llm_num_kv_heads * head_dim,
            'inter': profile.llm_intermediate_size, 'layers': profile.llm_num_layers}


def lm_flops(profile: Profile, vocab: int, new: int, past: int, logits: int) -> float:
    """Return the FLOPs of running ``new`` tokens after ``past`` cached ones.

    Projections (q, k, v, o, gate, up, down) for every new token, causal attention scores
    and weighted values against ``past`` + the new tokens before each, and the LM head for
    ``logits`` positions. Norms, RoPE and activations are not counted (small).
    """
    s = _lm_shape(profile)
    d, kv, inter, layers = s['d'], s['kv'], s['inter'], s['layers']
    per_token = 2 * (2 * d * d + 2 * d * kv + 3 * d * inter)
    contexts = new * past + new * (new + 1) / 2  # sum over new tokens of keys attended
    attention = 4 * d * contexts
    return layers * (new * per_token + attention) + 2 * d * vocab * logits


def lm_bytes(model: Vlm3rModel, profile: Profile, past: int, new: int) -> float:
    """Return the bytes a pass must move at least: LM weights once (one embedding row per
    token, not the table) and the KV cache of ``past`` read and of ``new`` written."""
    lm = model.net.language_model
    embed = lm.get_input_embeddings().weight
    weights = module_bytes(lm) - embed.numel() * embed.element_size()
    weights += new * embed.shape[1] * embed.element_size()
    s = _lm_shape(profile)
    kv_bytes = 2 * s['layers'] * s['kv'] * embed.element_size()
    return weights + kv_bytes * (past + new)


def _median_ms(clock: Clock, fn: Any, repeats: int, before: Any = None) -> float:
    """Return the median ms of ``repeats`` calls of ``fn`` (each after ``before()``)."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        times.append(clock.once_ms(fn))
    return statistics.median(times)


# ------------------------------------------------------------------------------------ stage
def llm_stage(doc: dict[str, Any], clock: Clock, meter: MemoryMeter, spec: Any,
              dtype_name: str, device: torch.device, image: np.ndarray) -> None:
    """Measure encoding and questions of the ``spec.profile`` LMM in ``dtype_name``."""
    profile = get_profile(spec.profile, device=str(device), dtype=dtype_name)
    entry: dict[str, Any] = doc['llm'].setdefault(dtype_name, {'profile': profile.name})
    ceilings = doc.get('ceilings', {})
    with meter.stage(f'llm:{dtype_name}:build'):
        model = build_model(profile, device)
    entry['weights_gib'] = round(module_bytes(model.net) / 2 ** 30, 3)
    entry['parameters'] = sum(p.numel() for p in model.net.parameters())
    entry['build_memory'] = meter.stages.get(f'llm:{dtype_name}:build')
    gen = torch.Generator().manual_seed(0)
    geometry = torch.randn(profile.geometry_num_tokens, profile.geometry_dim, generator=gen)
    points = np.random.default_rng(0).uniform(-4, 4, (480, 640, 3)).astype(np.float32)

    def encode() -> torch.Tensor:
        return model.encode_frame(image, geometry, points)

    # ---- per-frame visual encoding
    key = f'llm:{dtype_name}:encode'
    with meter.stage(key):
        timing = clock.repeat(encode, spec.encode_frames, warmup=2)
    vision = module_bytes(model.net.vision_tower) + module_bytes(model.net.mm_projector)
    if model.net.fusion_block is not None:
        vision += module_bytes(model.net.fusion_block)
    encode_floor = floor_ms(count_flops(encode), vision, ceilings, dtype_name)
    entry['encode'] = {'ms': timing.loop_ms, 'timing': timing.to_json(), 'floor': encode_floor,
                       'ratio_to_floor': ratio(timing.loop_ms, encode_floor),
                       'memory': meter.stages.get(key),
                       'note': 'SigLIP + fusion + projector + pooling + newlines of one 480x640 '
                       'frame (image and geometry tokens start on the host)'}
    frame = encode()
    frames = [frame.clone() for _ in range(spec.keyframes)]
    entry['visual_tokens'] = spec.keyframes * profile.tokens_per_frame

    n_answer, n_decode, reps = spec.answer_tokens, spec.decode_tokens, spec.repeats
    clear = model.clear_cache

    def ask(prompt: str, tokens: int) -> Any:
        return lambda: model.answer(prompt, frames, tokens)

    key = f'llm:{dtype_name}:questions'
    with fixed_length(model), meter.stage(key):
        # Warm-up: one miss and one hit (kernels, allocator, cuBLAS handles).
        clear()
        ask(QUESTION, 2)()
        ask(QUESTION, 2)()
        prefill = _median_ms(clock, ask(QUESTION, 0), reps, clear)
        stats = model.last_stats
        ttft = _median_ms(clock, ask(QUESTION, 1), reps, clear)
        first = _median_ms(clock, ask(QUESTION, n_answer), reps, clear)
        kv_bytes = model.cache_info()['bytes']
        repeated = _median_ms(clock, ask(QUESTION, n_answer), reps)
        hit_stats = model.last_stats
        new_q = _median_ms(clock, ask(FOLLOW_UP, n_answer), reps)
        hit_one = _median_ms(clock, ask(QUESTION, 1), reps)
        hit_long = _median_ms(clock, ask(QUESTION, n_decode), reps)
    assert stats is not None and hit_stats is not None and hit_stats.prefix_hit
    memory = meter.stages.get(key)
    prefix = stats.prefix_tokens
    question = hit_stats.prefilled_tokens
    vocab = model.net.language_model.get_output_embeddings().weight.shape[0]
    decode_ms = (hit_long - hit_one) / max(1, n_decode - 1)

    def cost(new: int, past: int, logits: int) -> tuple[float, float]:
        return lm_flops(profile, vocab, new, past, logits), lm_bytes(model, profile, past, new)

    pf, pb = cost(prefix, 0, 0)
    qf, qb = cost(question, prefix, 1)
    mid = prefix + question + n_decode // 2
    df, db = cost(1, mid, 1)
    answer_steps = max(0, n_answer - 1)
    f_prefill = floor_ms(pf, pb, ceilings, dtype_name)
    f_question = floor_ms(qf, qb, ceilings, dtype_name)
    f_decode = floor_ms(df, db, ceilings, dtype_name)

    def total(*floors: tuple[dict, float]) -> dict[str, Any]:
        value = sum((f['floor_ms'] or 0.0) * k for f, k in floors)
        return {'floor_ms': round(value, 5), 'bound': 'sum of parts',
                'parts': {f'{i}': f for i, (f, _) in enumerate(floors)}}

    f_ttft = total((f_prefill, 1), (f_question, 1))
    f_first = total((f_prefill, 1), (f_question, 1), (f_decode, answer_steps))
    f_hit = total((f_question, 1), (f_decode, answer_steps))
    rows = {
        'prefill': (prefill, f_prefill, f'prefix prefill only ({prefix} tokens: system text + '
                    f'{entry["visual_tokens"]} visual), no question'),
        'ttft': (ttft, f_ttft, 'prefix prefill + question tokens + first token (miss)'),
        'first_question': (first, f_first, f'miss, {n_answer} tokens decoded'),
        'repeated_question': (repeated, f_hit, f'prefix hit, same question, {n_answer} tokens'),
        'new_question': (new_q, f_hit, f'prefix hit, new question, {n_answer} tokens'),
        'decode': (decode_ms, f_decode, f'ms/token: (hit with {n_decode} tokens - hit with 1) '
                   f'/ {n_decode - 1}, context about {mid} tokens'),
    }
    for name, (ms, floor, note) in rows.items():
        entry[name] = {'ms': round(ms, 4), 'floor': floor, 'ratio_to_floor': ratio(ms, floor),
                       'memory': memory, 'note': note}
    entry['question_extend'] = {'ms': round(hit_one, 4), 'floor': f_question,
                                'ratio_to_floor': ratio(hit_one, f_question),
                                'note': f'{question} question tokens on a prefix hit + 1 token'}
    entry['generated_tokens'] = hit_stats.generated_tokens  # == answer_tokens (fixed length)
    entry['prefix_tokens'] = prefix
    entry['question_tokens'] = question
    entry['prefix_kv_bytes'] = kv_bytes
    # Cross-check of the analytic count; attention counted dense (no causal halving), and
    # only for the attention kernels FlopCounterMode knows (not the CPU flash kernel).
    entry['prefill_flops_counted_dense'] = count_flops(
        lambda: (clear(), model.answer(QUESTION, frames, 0)))
    entry['tokens_per_s_decode'] = round(1000 / decode_ms, 2) if decode_ms > 0 else None
    clear()
    del model, frames, frame
