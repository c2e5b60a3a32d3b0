"""Tests for the Video-3D LLM 3D position encoding."""

import math

import numpy as np
import pytest
import torch

from vlm3r_ros.models.video3d_pe import (
    discretize_coordinates, patch_average_coordinates, sinusoidal_3d_encoding,
    video3d_position_encoding)


def _reference_encoding(coord: tuple[float, float, float], dim: int,
                        temperature: float) -> list[float]:
    """Element-by-element statement of the encoding, written independently of the module."""
    feats = dim // 3
    out: list[float] = []
    for value in coord:
        for i in range(feats):
            angle = value / temperature ** (2 * (i // 2) / feats)
            out.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    return out + [0.0] * (dim - 3 * feats)


@pytest.mark.parametrize('dim', [64, 66, 3584])
def test_sinusoidal_encoding_matches_formula(dim: int) -> None:
    coords = torch.tensor([[0.0, 0.0, 0.0], [150.0, 37.0, 100.0], [300.0, 1.0, 2.0]])
    encoded = sinusoidal_3d_encoding(coords, dim)
    assert encoded.shape == (3, dim) and encoded.dtype == torch.float32
    for row, coord in enumerate(coords.tolist()):
        expected = torch.tensor(_reference_encoding(tuple(coord), dim, 10000.0))
        assert torch.allclose(encoded[row], expected, atol=2e-4), dim
    # Tail beyond 3 * (dim // 3) is zero padding; origin encodes to sin 0 / cos 1 pairs.
    assert torch.all(encoded[:, 3 * (dim // 3):] == 0)
    assert torch.all(encoded[0, 0:dim // 3:2] == 0) and torch.all(encoded[0, 1:dim // 3:2] == 1)


def test_sinusoidal_encoding_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        sinusoidal_3d_encoding(torch.zeros(4, 2), 64)
    with pytest.raises(ValueError):
        sinusoidal_3d_encoding(torch.zeros(4, 3), 2)


def test_discretize_clamps_and_rounds() -> None:
    coords = torch.tensor([[-20.0, 0.0, 7.0], [0.04, 0.06, -5.0], [14.96, -14.951, 4.9]])
    idx = discretize_coordinates(coords, (-15, -15, -5), (15, 15, 5), 0.1)
    assert idx.tolist() == [[0.0, 150.0, 100.0], [150.0, 151.0, 0.0], [300.0, 0.0, 99.0]]


def test_patch_average_is_the_mean_of_each_cell() -> None:
    height, width, grid = 8, 12, 2
    points = np.zeros((height, width, 3), dtype=np.float32)
    rng = np.random.default_rng(3)
    points[:] = rng.normal(size=points.shape)
    coords, valid = patch_average_coordinates(points, grid, grid)
    assert coords.shape == (4, 3) and valid.all()
    expected = [points[r * 4:(r + 1) * 4, c * 6:(c + 1) * 6].reshape(-1, 3).mean(axis=0)
                for r in range(grid) for c in range(grid)]
    assert np.allclose(coords.numpy(), np.stack(expected), atol=1e-5)


def test_patch_average_ignores_invalid_points() -> None:
    points = np.ones((4, 4, 3), dtype=np.float32)
    points[:2, :2] = np.nan  # whole top-left cell invalid
    points[2, 2] = [np.inf, 0, 0]  # one invalid pixel in the bottom-right cell
    points[3, 3] = [5.0, 5.0, 5.0]
    coords, valid = patch_average_coordinates(points, 2, 2)
    assert valid.tolist() == [False, True, True, True]
    assert coords[0].tolist() == [0.0, 0.0, 0.0]
    assert np.allclose(coords[3].numpy(), [(1 + 1 + 5) / 3] * 3)
    encoding = video3d_position_encoding(points, 2, 2, 30)
    assert torch.all(encoding[0] == 0) and torch.any(encoding[1] != 0)


def test_position_encoding_distinguishes_places() -> None:
    points = np.zeros((28, 28, 3), dtype=np.float32)
    points[:, 14:, 0] = 2.0  # right half is 2 m further along x
    encoding = video3d_position_encoding(points, 2, 2, 63)
    assert encoding.shape == (4, 63)
    assert torch.equal(encoding[0], encoding[2]) and not torch.equal(encoding[0], encoding[1])
    # Only the x block differs between left and right cells.
    assert torch.equal(encoding[0, 21:], encoding[1, 21:])


def test_bad_world_points_raise() -> None:
    with pytest.raises(ValueError, match='H, W, 3'):
        patch_average_coordinates(np.zeros((4, 4)), 2, 2)
    with pytest.raises(ValueError, match='does not fit'):
        patch_average_coordinates(np.zeros((4, 4, 3)), 8, 8)
