"""vlm3r-map from a bag: the planned path over the bag's poses drawn as a PNG."""
import numpy as np
import pytest

from vlm3r_ros.eval.bags import write_bag
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.tools import route_map_cli


@pytest.fixture(scope='module')
def bag_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('mapbag')
    scene = make_scene(2)
    write_bag(scene, make_trajectory(scene, seconds=20, rate_hz=2, seed=2), out,
              compressed=True, with_pose=True, width=48, height=36, make_qa=False)
    return out


def test_map_from_bag_draws_the_route(bag_dir, tmp_path):
    out, other = tmp_path / 'a.png', tmp_path / 'b.png'
    assert route_map_cli.main(['--bag', str(bag_dir), '--goal-frame', '5', '--out', str(out)]) == 0
    assert route_map_cli.main(['--bag', str(bag_dir), '--goal-frame', '30', '--out',
                               str(other)]) == 0
    import matplotlib.image as mpimg
    a, b = mpimg.imread(out), mpimg.imread(other)
    assert a.shape == b.shape and a.shape[0] > 300
    assert not np.array_equal(a, b)  # a different goal gives a different drawing


def test_map_reports_missing_poses(bag_dir, tmp_path):
    assert route_map_cli.main(['--bag', str(bag_dir), '--pose-topic', '/nope',
                               '--out', str(tmp_path / 'x.png')]) == 1
