"""Plain tests of the fused-model training side: debiasing and numeric decoding."""
from __future__ import annotations

import numpy as np
import torch

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.models.profiles import get_profile
from vlm3r_ros.models.vlm3r.model import Vlm3rModel
from vlm3r_ros.models.vlm3r.prompt import qwen_1_5_prompt
from vlm3r_ros.train.qa_debias import TextPrior, balance_answers, debias, item_score

DIRECTIONS = ('Forward', 'Backward', 'Left', 'Right')


def _movement_items(n: int, seed: int, bias: float) -> list[QAItem]:
    """Camera-movement items whose answer is 'Forward' with probability ``bias``."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        answer = 'Forward' if rng.random() < bias else DIRECTIONS[1 + k % 3]
        order = list(rng.permutation(DIRECTIONS))
        letter = chr(ord('A') + order.index(answer))
        items.append(QAItem(
            id=f's{k:04d}-camera_movement_direction-00', task='camera_movement_direction',
            question='Did the camera move forward, backward, left or right?',
            options=[f'{chr(65 + i)}. {t}' for i, t in enumerate(order)], answer=letter,
            answer_type='option', benchmark='VSTI-Bench', answer_text=answer))
    return items


def _blind_accuracy(prior: TextPrior, items: list[QAItem]) -> float:
    return float(np.mean([item_score(i, prior.predict(i)) for i in items]))


def test_text_prior_exploits_the_answer_bias_and_debiasing_removes_it() -> None:
    train = _movement_items(800, 0, 0.63)
    test = _movement_items(400, 1, 0.63)
    assert _blind_accuracy(TextPrior.fit(train), test) > 0.55
    kept_train, kept, report = debias(train, {'test': test})
    blind_after = _blind_accuracy(TextPrior.fit(kept_train), kept['test'])
    assert blind_after < 0.25 + 0.06
    row = report['test'][0]
    assert row.blind_before > 0.55 and row.items_after < row.items_before


def test_balance_answers_equalises_answer_texts() -> None:
    items = balance_answers(_movement_items(600, 2, 0.7), np.random.default_rng(0))
    counts = {d: sum(i.answer_text == d for i in items) for d in DIRECTIONS}
    assert len(set(counts.values())) == 1 and counts['Forward'] > 0


def test_number_distribution_matches_teacher_forced_probabilities() -> None:
    torch.set_num_threads(1)
    model = Vlm3rModel.random(get_profile('tiny'))
    frames = [torch.randn(model.tokens_per_frame, model.hidden_size) for _ in range(2)]
    values, probs = model.number_distribution('How many chairs?', frames, beam=8,
                                              max_tokens=3)
    assert np.isclose(probs.sum(), 1.0) and np.all(np.diff(probs) <= 1e-12)
    # The two best answers' relative probability equals the full-recompute ratio.
    tok = model.tokenizer
    end = tok.convert_tokens_to_ids('<|im_end|>')
    chat = qwen_1_5_prompt('How many chairs?', model.profile.system_prompt, True)
    logps = []
    with torch.no_grad():
        base = torch.cat([model._embed(model._ids(chat.prefix)), *frames,
                          model._embed(model.suffix_ids(chat))])
        for value in values[:2]:
            text = f'{value:g}' if value != int(value) else str(int(value))
            ids = tok(text, add_special_tokens=False)['input_ids'] + [end]
            seq = torch.cat([base, model._embed(torch.tensor(ids))])[None]
            logp = torch.log_softmax(
                model.net.language_model(inputs_embeds=seq).logits[0].float(), -1)
            logps.append(sum(float(logp[base.shape[0] - 1 + k, t]) for k, t in enumerate(ids)))
    assert np.isclose(probs[0] / probs[1], np.exp(logps[0] - logps[1]), rtol=1e-3)
    median = model.estimate_number('How many chairs?', frames)
    assert np.isfinite(median) and median >= 0
