"""Streamed answers of the tiny VLM-3R: token callback, iterator, early stop (cancel)."""
import numpy as np
import pytest
import torch

from vlm3r_ros.models.vlm3r.model import Vlm3rModel

QUESTION = 'These are frames of a video.\nHow many chair(s) are in this room?'


@pytest.fixture(scope='module')
def model() -> Vlm3rModel:
    return Vlm3rModel.from_profile('tiny')


def _frames(model: Vlm3rModel, count: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [model.encode_frame(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
                               torch.randn(101, 64, generator=torch.Generator().manual_seed(i)))
            for i in range(count)]


def test_token_callback_pieces_concatenate_to_the_unchanged_answer(model):
    frames = _frames(model, 3)
    plain = model.answer(QUESTION, frames, max_new_tokens=24)
    plain_stats = model.last_stats
    pieces: list[str] = []
    streamed = model.answer(QUESTION, frames, max_new_tokens=24, on_token=pieces.append)
    assert streamed == plain and ''.join(pieces) == plain
    assert plain_stats is not None and model.last_stats is not None
    assert model.last_stats.generated_tokens == plain_stats.generated_tokens
    # One piece per decoded token (plus a held-back tail, if any).
    assert len(pieces) - plain_stats.generated_tokens in (0, 1)
    stream = model.stream_answer(QUESTION, frames, max_new_tokens=24)
    assert ''.join(stream) == plain == stream.text and stream.done
    assert torch.is_grad_enabled()  # grad mode does not leak out of the generator


def test_callback_returning_false_stops_within_one_token(model):
    frames = _frames(model, 2, seed=5)
    full = model.answer(QUESTION, frames, max_new_tokens=24)
    generated = model.last_stats.generated_tokens
    assert generated >= 3, 'the tiny model should decode a few tokens here'
    calls: list[str] = []

    def stop_after_two(piece: str) -> bool:
        calls.append(piece)
        return len(calls) < 2

    partial = model.answer(QUESTION, frames, max_new_tokens=24, on_token=stop_after_two)
    assert len(calls) == 2 and model.last_stats.generated_tokens <= 2 + 1
    assert full.startswith(partial) and partial == ''.join(calls).strip()
    # The lock is free and the prefix cache restored: the same answer again, from the cache.
    assert model.answer(QUESTION, frames, max_new_tokens=24) == full
    assert model.last_stats.prefix_hit


def test_closing_the_iterator_releases_the_model(model):
    frames = _frames(model, 2, seed=7)
    full = model.answer(QUESTION, frames, max_new_tokens=24)
    stream = model.stream_answer(QUESTION, frames, max_new_tokens=24)
    first = next(stream)
    assert stream.close_and_text() == first.strip()
    assert model.answer(QUESTION, frames, max_new_tokens=24) == full
    with pytest.raises(ValueError):
        next(model.stream_answer(QUESTION, frames, max_new_tokens=-1))
