"""End to end on held-out RGB-only bags: the shipped small VLM-3R answers through the real
node (rclpy + Fast DDS). Fails when answer quality regresses.

The scene comes from the test seed range beyond the evaluated test scenes (never trained
on), rendered as the training data (224x168 at 5 Hz, 12 s) and streamed into the node's
image topic; every question goes through the SpatialQuery service with the node's product
decoding (likeliest option letter, greedy numbers) on 8 uniformly spaced keyframes, the
frame count the model was tuned on. The blind twin (same size and budget, question text
only) answers the same items without frames, for the printed comparison: the shipped
model does not beat it (MODEL_CARD_VLM3R.md), so that is not asserted.
"""
import time

import pytest

from ros_support import call, client_node, running_node, stream_into_node
from vlm3r_ros.eval.bags import TOPIC_IMAGE, read_bag_frames, write_bag
from vlm3r_ros.eval.qa import load_qa
from vlm3r_ros.eval.scoring import score_items
from vlm3r_ros.srv import SpatialQuery
from vlm3r_ros.tools.demo import blind_report
from vlm3r_ros.train.dataset import SPLIT_SEED_BASE
from vlm3r_ros.train.scene_sampling import sample_sequence
from vlm3r_ros.weights import VLM3R_SMALL

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SEEDS = [SPLIT_SEED_BASE['test'] + 901, SPLIT_SEED_BASE['test'] + 902]
BUDGET = 8
# Measured through the node when the weights were committed (these seeds, 2 CPU cores):
# 86 questions, overall 0.453 (the blind twin on the same items 0.444, the report's chance
# level 0.473). The floor sits well
# below: a regression to the random LMM's unusable answers or to far below the priors fails.
MIN_OVERALL = 0.30


def held_out_bag(seed, directory):
    spec = sample_sequence(seed, seconds=12.0, rate_hz=5.0, width=224, height=168)
    res = write_bag(spec.scene, spec.trajectory, directory, K=spec.K, width=spec.width,
                    height=spec.height, qa_seed=seed,
                    qa_kwargs={'num_frames': BUDGET, 'max_per_task': 4})
    frames = [(stamp, img) for _, stamp, img in read_bag_frames(res.bag_path, [TOPIC_IMAGE])]
    return frames, load_qa(res.qa_path)[0]


def ask_all(frames, items):
    """Stream ``frames`` into a fresh node, ask every item; return {item id: answer text}."""
    with running_node(model_profile='tiny', geometry_rate_hz=100.0, qos_reliability='reliable',
                      qos_depth=100, keyframe_selection='uniform',
                      keyframe_budget=BUDGET) as (_node, ns), client_node() as client:
        statuses = stream_into_node(client, ns, frames)
        statuses.wait(lambda m: m.frames_received >= len(frames), timeout=60)
        time.sleep(1.0)  # the geometry worker finishes the last frames
        answers = {}
        for item in items:
            res = call(client, SpatialQuery, f'{ns}/vlm3r_node/spatial_query',
                       SpatialQuery.Request(question=item.question, options=list(item.options)),
                       timeout=60)
            assert res is not None and res.success, getattr(res, 'message', 'no response')
            answers[item.id] = res.answer
    return answers


def test_the_shipped_model_answers_held_out_questions_through_the_node(tmp_path):
    assert (VLM3R_SMALL / 'base').is_dir(), 'the shipped small VLM-3R is missing'
    items, answers = [], {}
    for seed in SEEDS:
        frames, scene_items = held_out_bag(seed, tmp_path / str(seed))
        answers.update(ask_all(frames, scene_items))
        items += scene_items
    node = score_items(items, answers)
    blind = blind_report(items)
    assert blind is not None
    print(f'node {node.overall:.3f} blind {blind.overall:.3f} chance {node.overall_chance:.3f}'
          f' items {len(items)}')
    # A trained model answers in the asked format: an option letter or a number, always
    # (the random LMM leaves most answers unparseable).
    unusable = [i.question for i in node.items if i.parsed == '']
    assert not unusable, unusable
    assert node.overall >= MIN_OVERALL, (node.overall, blind.overall)
