"""Parameter table, validation and the shipped YAML file."""
from pathlib import Path

import pytest
import yaml

from vlm3r_ros.node import params
from vlm3r_ros.node.write_config import render

ROOT = Path(__file__).resolve().parents[1]


def defaults():
    return {s.name: s.default for s in params.SPECS}


def test_config_file_is_generated_from_the_table():
    text = (ROOT / 'config' / 'vlm3r.yaml').read_text()
    assert text == render(), 'run: python -m vlm3r_ros.node.write_config > config/vlm3r.yaml'
    loaded = yaml.safe_load(text)['vlm3r_node']['ros__parameters']
    assert loaded == defaults()


def test_defaults_validate_and_map_to_engine_config():
    cfg = params.validate(defaults())
    engine = cfg.engine_config()
    assert engine.keyframe_budget == 32 and engine.coverage_ratio == 0.95
    assert engine.max_bytes == 1024 << 20
    assert cfg.up_vector() == (0.0, -1.0, 0.0)  # CUT3R world without a pose topic
    assert params.validate({**defaults(), 'pose_topic': 'odom'}).up_vector() == (0, 0, 1)


@pytest.mark.parametrize('name,value,match', [
    ('image_transport', 'theora', 'not one of'),
    ('keyframe_budget', 0, 'outside'),
    ('coverage_ratio', 1.5, 'outside'),
    ('image_topic', ' ', 'must not be empty'),
    ('up_axis', '1,2', "'auto' or 'x,y,z'"),
    ('up_axis', '0,0,0', 'must not be zero'),
])
def test_bad_values_are_rejected_by_name(name, value, match):
    with pytest.raises(ValueError, match=match):
        params.validate({**defaults(), name: value})


def test_every_spec_has_a_description_and_sane_range():
    for spec in params.SPECS:
        assert spec.description.strip(), spec.name
        if spec.low is not None:
            assert spec.low <= spec.default <= spec.high, spec.name
        if spec.choices:
            assert spec.default in spec.choices, spec.name
        desc = params.descriptor(spec)
        assert desc.description == spec.description


def test_runtime_changes_are_checked_and_classified():
    from vlm3r_ros.node.params import LIVE, SPECS, check_change
    assert check_change({'keyframe_budget': 8}, configured=True) is None
    assert 'not one of' in check_change({'qos_reliability': 'bogus'}, configured=False)
    assert 'read at configure' in check_change({'qos_depth': 7}, configured=True)
    assert check_change({'qos_depth': 7}, configured=False) is None  # used at configure
    assert 'read-only' in check_change({'device': 'cpu'}, configured=False)
    assert check_change({'use_sim_time': True}, configured=True) is None  # not ours
    names = {spec.name for spec in SPECS}
    assert LIVE <= names and not any(spec.read_only for spec in SPECS if spec.name in LIVE)


def test_numerics_parameter_reaches_the_model_spec():
    from vlm3r_ros.models.loader import ModelSpec
    spec = params._BY_NAME['numerics']
    assert spec.default == 'auto' and spec.read_only
    assert spec.choices == ('auto', 'reference', 'precise')
    assert ModelSpec.from_config(params.validate(defaults())).numerics == 'auto'
    cfg = params.validate({**defaults(), 'numerics': 'reference'})
    assert ModelSpec.from_config(cfg).resolved_numerics() == 'reference'
    with pytest.raises(ValueError, match='numerics'):
        params.validate({**defaults(), 'numerics': 'fast'})
