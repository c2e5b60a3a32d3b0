"""Synthetic scenes, trajectories and the ray-casting renderer."""
import math

import numpy as np
import pytest

from vlm3r_ros.eval.render import (CEILING, FLOOR, WALL_CODES, intrinsics, render,
                                   render_full, render_ids, scale_intrinsics)
from vlm3r_ros.eval.scenes import (CATEGORIES, Scene, SceneObject, Trajectory, camera_pose,
                                   footprint_distance, footprint_distance_to_points,
                                   make_scene, make_trajectory, object_distance,
                                   point_object_distance)

SEEDS = range(6)


def box(i, cat, x, y, w, d, h, yaw=0.0, z0=0.0, colour='red'):
    return SceneObject(i, cat, colour, 'box', (x, y, z0 + h / 2), (w, d, h), yaw)


def cyl(i, cat, x, y, diameter, h, z0=0.0, colour='green'):
    return SceneObject(i, cat, colour, 'cylinder', (x, y, z0 + h / 2), (diameter, diameter, h))


def empty_room(w=6.0, d=4.0, h=2.5, objects=()):
    return Scene(seed=0, width=w, depth=d, height=h, objects=tuple(objects))


# ------------------------------------------------------------------------ scenes


def test_make_scene_is_deterministic_per_seed():
    assert make_scene(3).to_dict() == make_scene(3).to_dict()
    assert make_scene(3).to_dict() != make_scene(4).to_dict()


@pytest.mark.parametrize('seed', SEEDS)
def test_scene_objects_are_valid_and_do_not_overlap(seed):
    scene = make_scene(seed)
    counts = scene.counts()
    assert counts['door'] == 1
    assert any(n > 1 for n in counts.values()), counts  # something to count
    assert len(scene.unique_categories()) >= 4  # enough for directions and routes
    assert [o.instance_id for o in scene.objects] == list(range(len(scene.objects)))
    for obj in scene.objects:
        assert obj.category in CATEGORIES
        assert obj.shape == CATEGORIES[obj.category].shape
        assert scene.contains_xy(obj.footprint(), margin=-1e-6).all()
        assert 0.0 <= obj.z_min < obj.z_max <= scene.height
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1:]:
            assert footprint_distance(a, b) > 0.01, (a, b)


def test_scene_dict_round_trip():
    scene = make_scene(5)
    again = Scene.from_dict(scene.to_dict())
    assert again.to_dict() == scene.to_dict()
    assert again.area == pytest.approx(scene.width * scene.depth)


def test_make_scene_rejects_unknown_category():
    with pytest.raises(ValueError):
        make_scene(0, categories=['spaceship'])


def test_object_distances_by_hand():
    # Two axis-aligned boxes 1 m apart along x (faces at x=0.5 and x=1.5).
    a = box(0, 'table', 0.0, 0.0, 1.0, 1.0, 1.0)
    b = box(1, 'sofa', 2.0, 0.0, 1.0, 1.0, 1.0)
    assert object_distance(a, b) == pytest.approx(1.0)
    # Offset diagonally: corner (0.5, 0.5) to corner (1.5, 1.5) -> sqrt(2).
    c = box(2, 'bed', 2.0, 2.0, 1.0, 1.0, 1.0)
    assert object_distance(a, c) == pytest.approx(math.sqrt(2.0))
    # A tv hanging over box a: footprints overlap, a's top is at z=1.0 and the tv's
    # bottom at z=1.5, so the closest points are 0.5 m apart vertically.
    tv = box(3, 'tv', 0.0, 0.0, 1.0, 0.1, 0.5, z0=1.5)
    assert object_distance(a, tv) == pytest.approx(0.5)
    # Rotated by 45 degrees: a 1x1 box reaches sqrt(0.5) along x from its centre.
    r = box(4, 'cabinet', 3.0, 0.0, 1.0, 1.0, 1.0, yaw=math.pi / 4)
    assert object_distance(a, r) == pytest.approx(3.0 - 0.5 - math.sqrt(0.5))
    # Cylinder radius 0.25 at x=3: from a's face at 0.5 -> 3 - 0.25 - 0.5.
    p = cyl(5, 'plant', 3.0, 0.0, 0.5, 1.0)
    assert object_distance(a, p) == pytest.approx(2.25)
    q = cyl(6, 'lamp', 3.0, 1.0, 0.4, 1.0)
    assert object_distance(p, q) == pytest.approx(1.0 - 0.25 - 0.2)
    # Point 2 m in front of a's face at the same height, and 1 m above its top.
    assert point_object_distance((2.5, 0.0, 0.5), a) == pytest.approx(2.0)
    assert point_object_distance((0.0, 0.0, 2.0), a) == pytest.approx(1.0)
    assert point_object_distance((1.5, 1.5, 2.0), a) == pytest.approx(math.sqrt(1 + 1 + 1))
    # Touching / overlapping footprints are distance 0.
    assert footprint_distance(a, box(7, 'chair', 0.9, 0.0, 1.0, 1.0, 1.0)) == 0.0
    inside = footprint_distance_to_points(a, np.array([[0.1, 0.1], [1.5, 0.0]]))
    assert inside.tolist() == pytest.approx([0.0, 1.0])


# -------------------------------------------------------------------- trajectory


def test_camera_pose_uses_opencv_axes_with_world_z_up():
    pose = camera_pose((1.0, 2.0, 1.2), yaw=0.0, pitch=0.0)
    assert pose[:3, 0] == pytest.approx([0.0, -1.0, 0.0])  # x right of heading +x
    assert pose[:3, 1] == pytest.approx([0.0, 0.0, -1.0])  # y down
    assert pose[:3, 2] == pytest.approx([1.0, 0.0, 0.0])  # z forward
    assert pose[:3, 3] == pytest.approx([1.0, 2.0, 1.2])
    tilted = camera_pose((0, 0, 1), yaw=math.pi / 2, pitch=-0.3)
    assert tilted[:3, 2] == pytest.approx([0.0, math.cos(0.3), -math.sin(0.3)])
    assert np.linalg.det(tilted[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize('seed', [0, 2, 4])
def test_trajectory_is_smooth_safe_and_revisits(seed):
    scene = make_scene(seed)
    traj = make_trajectory(scene, seconds=40.0, rate_hz=5.0, seed=1, clearance=0.45)
    assert len(traj) == 200
    assert np.allclose(np.diff(traj.times), 0.2)
    rots = traj.poses[:, :3, :3]
    assert np.allclose(rots @ rots.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rots), 1.0)
    pos = traj.positions
    assert np.ptp(pos[:, 2]) < 1e-9 and 1.0 <= pos[0, 2] <= 1.5
    # Inside the room and away from every object (grid resolution 5 cm).
    assert scene.contains_xy(pos[:, :2], margin=0.45 - 0.05).all()
    for obj in scene.objects:
        assert footprint_distance_to_points(obj, pos[:, :2]).min() >= 0.45 - 0.05
    # Smooth: bounded linear and angular speed, no jumps.
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) * traj.rate_hz
    assert speed.max() <= 0.5 + 1e-6
    heading = np.unwrap(np.arctan2(traj.poses[:, 1, 2], traj.poses[:, 0, 2]))
    turn = np.abs(np.diff(heading)) * traj.rate_hz
    assert turn.max() <= 1.5 * 0.9 + 1e-6
    assert turn.sum() / traj.rate_hz > math.pi  # it really turns around
    assert speed.sum() / traj.rate_hz > 2.0  # it really drives
    # Revisits: some later pose comes back within 0.3 m of a pose >= 8 s earlier.
    dist = np.linalg.norm(pos[:, None, :2] - pos[None, :, :2], axis=-1)
    gap = np.abs(np.subtract.outer(traj.times, traj.times)) >= 8.0
    far_between = False
    for i, j in zip(*np.nonzero((dist < 0.3) & gap)):
        if i < j and np.linalg.norm(pos[i:j, :2] - pos[i, :2], axis=1).max() > 1.0:
            far_between = True
            break
    assert far_between


def test_trajectory_is_deterministic_and_validates():
    scene = make_scene(1)
    a = make_trajectory(scene, seconds=6.0, rate_hz=5.0, seed=3)
    b = make_trajectory(scene, seconds=6.0, rate_hz=5.0, seed=3)
    assert np.array_equal(a.poses, b.poses)
    assert a.stamps_ns(10)[:3].tolist() == [10, 200_000_010, 400_000_010]
    with pytest.raises(ValueError):
        make_trajectory(scene, seconds=0.0)


# ------------------------------------------------------------------------ render


def test_intrinsics_helpers():
    K = intrinsics(320, 240, hfov_deg=90.0)
    assert K[0, 0] == pytest.approx(160.0) and K[1, 1] == pytest.approx(160.0)
    assert (K[0, 2], K[1, 2]) == (159.5, 119.5)
    half = scale_intrinsics(K, 0.5, 0.5)
    assert half[0, 0] == pytest.approx(80.0) and (half[0, 2], half[1, 2]) == (79.5, 59.5)
    with pytest.raises(ValueError):
        intrinsics(0, 10)


def test_render_depth_of_walls_floor_and_ceiling():
    scene = empty_room(w=6.0, d=4.0, h=2.5)
    K = intrinsics(64, 48, hfov_deg=60.0)
    # Looking straight at the +x wall from x=1: z-depth is 2 m everywhere on the wall.
    rgb, depth = render(scene, camera_pose((1.0, 0.0, 1.25), 0.0, 0.0), K, 64, 48)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    assert np.allclose(depth, 2.0, atol=1e-5)
    ids = render_ids(scene, camera_pose((1.0, 0.0, 1.25), 0.0, 0.0), K, 64, 48)
    assert (ids == WALL_CODES[1]).all()
    # Pitched 90 degrees down at 1.5 m: the floor is 1.5 m away along the axis.
    down = render_full(scene, camera_pose((0.0, 0.0, 1.5), 0.0, -math.pi / 2), K, 64, 48)
    assert np.allclose(down.depth, 1.5, atol=1e-4) and (down.ids == FLOOR).all()
    up = render_full(scene, camera_pose((0.0, 0.0, 1.5), 0.0, math.pi / 2), K, 64, 48)
    assert np.allclose(up.depth, 1.0, atol=1e-4) and (up.ids == CEILING).all()
    # Textured, not flat.
    assert rgb.reshape(-1, 3).std(axis=0).max() > 3.0


def test_render_unprojects_onto_room_surfaces():
    scene = empty_room(w=5.0, d=4.0, h=2.6)
    K = intrinsics(40, 30, hfov_deg=80.0)
    pose = camera_pose((0.5, -0.3, 1.2), yaw=0.7, pitch=-0.25)
    depth = render(scene, pose, K, 40, 30)[1]
    v, u = np.mgrid[0:30, 0:40]
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    pts = (cam * depth[..., None]) @ pose[:3, :3].T + pose[:3, 3]
    on_surface = (np.isclose(np.abs(pts[..., 0]), 2.5, atol=1e-3)
                  | np.isclose(np.abs(pts[..., 1]), 2.0, atol=1e-3)
                  | np.isclose(pts[..., 2], 0.0, atol=1e-3)
                  | np.isclose(pts[..., 2], 2.6, atol=1e-3))
    assert on_surface.all()


def test_render_box_and_cylinder_depth_and_ids():
    K = intrinsics(65, 49, hfov_deg=60.0)  # odd sizes: the centre pixel is on the axis
    pose = camera_pose((-2.0, 0.0, 0.5), 0.0, 0.0)
    # Box front face at x = 1.0 - 0.4 = 0.6 -> depth 2.6 m from x=-2.
    scene = empty_room(objects=[box(0, 'cabinet', 1.0, 0.0, 0.8, 0.8, 1.0, colour='blue')])
    out = render_full(scene, pose, K, 65, 49)
    assert out.ids[24, 32] == 0
    assert out.depth[24, 32] == pytest.approx(2.6, abs=1e-4)
    assert (out.rgb[24, 32].astype(int) - np.array([48, 86, 176])).std() < 60
    # The box's projected width: from z=2.6, half width 0.4 -> f*0.4/2.6 pixels each side.
    f = K[0, 0]
    row = out.ids[24]
    assert abs((row == 0).sum() - 2 * f * 0.4 / 2.6) <= 2
    # Cylinder radius 0.3 at x=1: nearest surface at x=0.7 -> depth 2.7 m.
    scene = empty_room(objects=[cyl(0, 'lamp', 1.0, 0.0, 0.6, 1.0)])
    out = render_full(scene, pose, K, 65, 49)
    assert out.ids[24, 32] == 0
    assert out.depth[24, 32] == pytest.approx(2.7, abs=1e-4)
    # From above the cylinder the top cap is visible: depth to the cap plane.
    top = render_full(scene, camera_pose((1.0, 0.0, 2.0), 0.0, -math.pi / 2), K, 65, 49)
    assert top.ids[24, 32] == 0 and top.depth[24, 32] == pytest.approx(1.0, abs=1e-4)
    # Objects behind the camera are not drawn.
    back = render_full(scene, camera_pose((-2.0, 0.0, 0.5), math.pi, 0.0), K, 65, 49)
    assert (back.ids < 0).all()


def test_render_ids_match_full_render_on_generated_scene():
    scene = make_scene(2)
    traj = make_trajectory(scene, seconds=2.0, rate_hz=2.0, seed=0)
    K = intrinsics(48, 36)
    for pose in traj.poses:
        full = render_full(scene, pose, K, 48, 36)
        assert np.array_equal(full.ids, render_ids(scene, pose, K, 48, 36))
        assert np.isfinite(full.depth).all() and (full.depth > 0).all()


def test_trajectory_dataclass_helpers():
    poses = np.stack([camera_pose((0, 0, 1.2), 0.1 * i, 0.0) for i in range(3)])
    traj = Trajectory(poses=poses, times=np.array([0.0, 0.5, 1.0]), rate_hz=2.0)
    assert len(traj) == 3
    assert traj.positions.shape == (3, 3)
    assert traj.stamps_ns().tolist() == [0, 500_000_000, 1_000_000_000]
