"""The demo's statements about the shipped fused model come from its measured evaluation."""
import json

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scoring import score_items
from vlm3r_ros.tools import demo
from vlm3r_ros.weights import VLM3R_SMALL_EVAL


def test_held_out_summary_quotes_the_shipped_evaluation():
    doc = json.loads(VLM3R_SMALL_EVAL.read_text())
    text = demo.held_out_summary()
    model = 100 * doc['summary']['model']['overall']
    blind = 100 * doc['summary']['blind']['overall']
    assert f'{model:.1f}%' in text and f'{blind:.1f}%' in text
    low, high = doc['intervals']['differences']['model-blind']
    assert ('below' in text) == (high < 0) and ('above' in text) == (low > 0)


def test_held_out_summary_points_to_the_card_without_the_report(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, 'VLM3R_SMALL_EVAL', tmp_path / 'missing.json')
    assert 'MODEL_CARD_VLM3R.md' in demo.held_out_summary()


def test_comparison_table_puts_the_blind_twin_beside_the_node():
    items = [QAItem(id=f'q{i}', task='object_counting', question='How many chairs?',
                    options=[], answer=str(2 + i), answer_type='number', benchmark='vsibench')
             for i in range(2)]
    node = score_items(items, {'q0': '2', 'q1': '3'})
    blind = score_items(items, {'q0': '9', 'q1': '9'})
    text = demo.comparison_table(node, blind)
    row = [line for line in text.splitlines() if line.startswith('object_counting')][0]
    assert row.split()[2:4] == ['100.0', '0.0']
    assert '-' in demo.comparison_table(node, None).splitlines()[-1]
