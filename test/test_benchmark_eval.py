"""vlm3r-eval on VSI-Bench / VSTI-Bench in their published layouts, through a real node.

The tests write a tiny dataset in each official layout (question parquet with the
official columns, MP4 videos rendered from synthetic scenes and written with
cv2.VideoWriter), run it through a launched node with the reference protocol and check
the report. No network.
"""
import json

import numpy as np
import pytest

from vlm3r_ros.eval.benchmark_data import (BenchmarkDataError, iter_frames, load_benchmark,
                                           looks_like_benchmark, reference_indices, video_info,
                                           write_parquet, write_video)
from vlm3r_ros.eval.official_scoring import benchmark_of, official_question_type
from vlm3r_ros.eval.qa import generate_qa
from vlm3r_ros.eval.render import intrinsics, render
from vlm3r_ros.eval.scenes import make_scene, make_trajectory
from vlm3r_ros.tools import evaluate

W, H, FRAMES = 96, 72, 40
SCENES = {'scannet': 3, 'arkitscenes': 5}


@pytest.fixture(scope='module')
def rendered():
    """Per dataset name: (scene name, frames, QA items) of one synthetic room."""
    out = {}
    for dataset, seed in SCENES.items():
        scene = make_scene(seed)
        traj = make_trajectory(scene, seconds=FRAMES / 2.0, rate_hz=2.0, seed=seed)
        K = intrinsics(W, H)
        frames = [render(scene, pose, K, W, H)[0] for pose in traj.poses[:FRAMES]]
        items = generate_qa(scene, traj, K, W, H, seed=0, max_per_task=1, num_frames=32)
        out[dataset] = (f'scene{seed:04d}_00', frames, items)
    return out


def write_vsibench(root, rendered, per_video=4):
    rows = []
    for dataset, (scene_name, frames, items) in rendered.items():
        write_video(root / dataset / f'{scene_name}.mp4', frames, fps=2.0)
        vsi = [i for i in items if benchmark_of(official_question_type(
            i.task, i.options, i.meta)) == 'VSI-Bench']
        half = per_video // 2  # numbers and multiple choice
        vsi = ([i for i in vsi if i.answer_type == 'number'][:half]
               + [i for i in vsi if i.answer_type == 'option'][:per_video - half])
        for item in vsi:
            rows.append({'id': len(rows), 'dataset': dataset, 'scene_name': scene_name,
                         'question_type': official_question_type(item.task, item.options,
                                                                 item.meta),
                         'question': item.question, 'options': item.options or None,
                         'ground_truth': str(item.answer)})
    write_parquet(root / 'test-00000-of-00001.parquet', rows)
    return rows


def write_vstibench(root, rendered, per_video=3):
    rows = []
    for dataset, (scene_name, frames, items) in rendered.items():
        write_video(root / dataset / f'{scene_name}.mp4', frames, fps=2.0)
        vsti = [i for i in items if benchmark_of(official_question_type(
            i.task, i.options, i.meta)) == 'VSTI-Bench'][:per_video]
        for item in vsti:
            mc = item.answer_type == 'option'
            rows.append({'video_path': f'{dataset}/{scene_name}.mp4',
                         'question_type': official_question_type(item.task, item.options,
                                                                 item.meta),
                         'question': item.question, 'options': item.options or None,
                         'mc_answer': str(item.answer) if mc else None,
                         'ground_truth': item.answer_text if mc else str(item.answer)})
    (root / 'test.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return rows


def test_video_decoding_and_reference_frames(tmp_path, rendered):
    _, frames, _ = rendered['scannet']
    path = write_video(tmp_path / 'v.mp4', frames, fps=2.0)
    info = video_info(path)
    assert info.frames == FRAMES and info.fps == pytest.approx(2.0)
    idx = reference_indices(info.frames)
    assert idx.tolist() == np.linspace(0, FRAMES - 1, 32, dtype=int).tolist()
    every = dict(iter_frames(path))
    picked = list(iter_frames(path, idx))
    assert [i for i, _ in picked] == idx.tolist()
    assert all(np.array_equal(rgb, every[i]) for i, rgb in picked)
    # Encoded lossily but close to the rendered frame, and RGB (not BGR) order.
    assert np.abs(every[0].astype(int) - frames[0].astype(int)).mean() < 12
    assert reference_indices(3).tolist().count(0) > 1  # short videos repeat frames


def test_tables_in_the_published_layouts(tmp_path, rendered):
    vsi_rows = write_vsibench(tmp_path / 'vsi', rendered)
    bench = load_benchmark(tmp_path / 'vsi')
    assert bench.benchmark == 'vsibench' and len(bench.items) == len(vsi_rows)
    assert looks_like_benchmark(tmp_path / 'vsi') and not bench.missing_videos
    first = bench.items[0]
    assert first.meta['video'].endswith(f'{vsi_rows[0]["dataset"]}/{vsi_rows[0]["scene_name"]}.mp4')
    assert {i.answer_type for i in bench.items} <= {'option', 'number'}
    vsti_rows = write_vstibench(tmp_path / 'vsti', rendered)
    vsti = load_benchmark(tmp_path / 'vsti')
    assert vsti.benchmark == 'vstibench' and len(vsti.items) == len(vsti_rows)
    for item, row in zip(vsti.items, vsti_rows):
        assert item.answer == (row['mc_answer'] if row['mc_answer'] else row['ground_truth'])
    bad = tmp_path / 'bad'
    write_parquet(bad / 't.parquet', [{'id': 0, 'dataset': 'x', 'scene_name': 'y',
                                       'question_type': 'made_up', 'question': 'q',
                                       'options': None, 'ground_truth': '1'}])
    with pytest.raises(BenchmarkDataError, match='made_up'):
        load_benchmark(bad)


def read_results(out):
    results = json.loads((out / 'results.json').read_text())
    answers = [json.loads(line) for line in (out / 'answers.jsonl').read_text().splitlines()]
    return results, answers


@pytest.mark.ros
def test_vsibench_layout_through_the_node_with_the_reference_protocol(tmp_path, rendered):
    rows = write_vsibench(tmp_path / 'VSI-Bench', rendered)
    out = tmp_path / 'eval'
    code = evaluate.main([str(tmp_path / 'VSI-Bench'), '--launch', '--profile', 'tiny',
                          '--protocol', 'reference', '--out', str(out)])
    assert code == evaluate.EXIT_OK
    results, answers = read_results(out)
    assert results['parser'] == 'official' and results['run']['protocol'] == 'reference'
    assert results['errors'] == {'OK': len(rows)}
    assert set(results['benchmarks']) == {'VSI-Bench'}
    assert {t['task'] for t in results['tasks']} == {r['question_type'] for r in rows}
    # Every video: its 32 reference frames published, none lost, every answer on 32 frames.
    assert [v['published'] for v in results['run']['videos']] == [32, 32]
    assert results['run']['streaming']['frames_lost'] == 0
    assert all(a['keyframes'] == 32 for a in answers)
    # The report's scores are the official ones of the answers given.
    by_id = {str(r['id']): r for r in rows}
    for a in answers:
        assert a['ground_truth'] == by_id[a['id']]['ground_truth']
    assert 'overall (official),VSI-Bench' in (out / 'results.csv').read_text()
    log = (out / 'node.log').read_text()
    assert 'protocol reference' in log and 'float32' in log  # the CPU note


@pytest.mark.ros
def test_vstibench_layout_sampled_and_all_frames_give_the_same_answers(tmp_path, rendered):
    """A running node (in this process) with the reference protocol; the tool streams the
    32 reference frames, then every frame: the node's linspace must pick the same ones."""
    from ros_support import running_node
    rows = write_vstibench(tmp_path / 'vstibench', {'scannet': rendered['scannet']})
    got = {}
    with running_node(model_profile='tiny', protocol='reference', qos_reliability='reliable',
                      status_period_s=0.1, geometry_rate_hz=0.1, buffer_max_frames=256) \
            as (node, ns):
        assert node.engine.wait_loaded(60)
        for stream in ('sampled', 'all'):
            out = tmp_path / f'eval_{stream}'
            code = evaluate.main([str(tmp_path / 'vstibench'), '--node', f'{ns}/vlm3r_node',
                                  '--image-topic', f'{ns}/camera/image_raw', '--protocol',
                                  'reference', '--stream', stream, '--out', str(out)])
            assert code == evaluate.EXIT_OK
            results, answers = read_results(out)
            assert results['errors'] == {'OK': len(rows)}
            assert set(results['benchmarks']) == {'VSTI-Bench'}
            published = [v['published'] for v in results['run']['videos']]
            assert published == ([32] if stream == 'sampled' else [FRAMES])
            assert all(a['keyframes'] == 32 for a in answers)
            got[stream] = [(a['id'], a['answer']) for a in answers]
        # A running node on another protocol is refused (it would not be the reference).
        assert evaluate.main([str(tmp_path / 'vstibench'), '--node', f'{ns}/vlm3r_node',
                              '--image-topic', f'{ns}/camera/image_raw',
                              '--out', str(tmp_path / 'x')]) == evaluate.EXIT_SETUP
    # The node's linspace over every frame picks exactly the frames the sampled run sent.
    assert got['sampled'] == got['all']
