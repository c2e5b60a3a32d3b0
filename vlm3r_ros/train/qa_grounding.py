"""Grounding items: a training aid that teaches the small model to find named objects.

A spatial question is 1-2 bits of supervision about a scene; before a from-scratch LLM can
answer "how far is the sofa from the lamp" it has to learn where "sofa" is among its visual
tokens. "Is there a sofa in these frames?" teaches exactly that lookup, with labels the
renderer gives for free (per-frame instance ids) and an answer no text prior can guess:
every category is asked as often with "yes" as with "no", and the option order is random, so
a blind model scores 50 %.

The items are QA items of task ``object_presence`` (benchmark ``training-aid``): the
trainer mixes them into the early batches (a curriculum, `TrainConfig.ground_share`) and
reports their held-out accuracy as a direct "does it look" signal. They are not part of the
VSI-Bench tasks and never enter the evaluation table. This is a small-profile deviation from
VLM-3R's recipe (which starts from pretrained towers and LLM), documented in the model card.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from vlm3r_ros.eval.qa import QAItem
from vlm3r_ros.eval.scenes import CATEGORIES

TASK = 'object_presence'
LIST_TASK = 'object_listing'
BENCHMARK = 'training-aid'
#: Category order of the presence table (``FeatureCache.presence`` columns).
PRESENCE_CATEGORIES: tuple[str, ...] = tuple(sorted(CATEGORIES))
#: A category counts as seen when this share of one sampled frame's pixels shows it;
#: "absent" needs zero pixels in every sampled frame (in between: no item, the label is moot).
MIN_VISIBLE_SHARE = 0.004
ABSENT, PRESENT, UNCLEAR = 0, 1, -1


def presence_row(ids_per_frame: Sequence[np.ndarray], scene_json: str) -> np.ndarray:
    """Return one scene's presence label per category of `PRESENCE_CATEGORIES`.

    ``ids_per_frame`` are the sampled frames' instance-id maps (object instance id >= 0,
    surfaces and background < 0); ``scene_json`` is the scene table's JSON. Returns an
    int8 vector of PRESENT / ABSENT / UNCLEAR.
    """
    objects = json.loads(scene_json)['objects']
    category_of = {int(o['instance_id']): o['category'] for o in objects}
    column = {c: k for k, c in enumerate(PRESENCE_CATEGORIES)}
    best = np.zeros(len(PRESENCE_CATEGORIES))
    for ids in ids_per_frame:
        total = ids.size
        values, counts = np.unique(ids[ids >= 0], return_counts=True)
        share = np.zeros(len(PRESENCE_CATEGORIES))
        for v, c in zip(values.tolist(), counts.tolist()):
            if v in category_of:
                share[column[category_of[v]]] += c / total
        best = np.maximum(best, share)
    row = np.full(len(PRESENCE_CATEGORIES), UNCLEAR, dtype=np.int8)
    row[best >= MIN_VISIBLE_SHARE] = PRESENT
    row[best == 0] = ABSENT
    return row


def presence_items(seeds: Sequence[int], presence: np.ndarray, seed: int = 0,
                   fixed_order: bool = False) -> list[QAItem]:
    """Return yes/no presence items balanced within every category.

    ``presence`` is (S, C) as `presence_row`, row k for ``seeds[k]``. For each category
    as many PRESENT as ABSENT (scene, category) pairs are drawn (as many as the rarer label
    has), so that not even "chairs are usually there" helps a blind model. The yes/no
    option order is drawn at random, or with ``fixed_order`` always 'A. yes', 'B. no' (the
    letter then is the visual bit itself, with no option reading to learn first; balanced
    labels keep both letters equally likely). Items come in scene order.
    """
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, int, bool]] = []
    for col in range(presence.shape[1]):
        yes = np.flatnonzero(presence[:, col] == PRESENT)
        no = np.flatnonzero(presence[:, col] == ABSENT)
        k = min(len(yes), len(no))
        chosen += [(int(r), col, True) for r in rng.choice(yes, k, replace=False)]
        chosen += [(int(r), col, False) for r in rng.choice(no, k, replace=False)]
    items = []
    for n, (row, col, present) in enumerate(sorted(chosen)):
        name = PRESENCE_CATEGORIES[col]
        texts = ['yes', 'no'] if fixed_order or rng.random() < 0.5 else ['no', 'yes']
        answer = 'A' if texts[0] == ('yes' if present else 'no') else 'B'
        items.append(QAItem(
            id=f's{seeds[row]}-{TASK}-{n}', task=TASK,
            question=f'Is there a {name} in these frames?',
            options=[f'A. {texts[0]}', f'B. {texts[1]}'], answer=answer,
            answer_type='option', benchmark=BENCHMARK,
            answer_text='yes' if present else 'no', meta={'category': name}))
    return items


def listing_items(seeds: Sequence[int], presence: np.ndarray) -> list[QAItem]:
    """Return one "which of these objects can be seen" item per scene (a text answer).

    The question names every category whose presence is clear (PRESENT or ABSENT; unclear
    ones are left out) and the answer lists the present ones in the question's order, or
    'none'. One item carries a label per named category, where a yes/no item carries one:
    the dense counterpart of `presence_items`, as captioning is for LLaVA's first stage.
    """
    items = []
    for row, scene in enumerate(seeds):
        named = [c for c in range(presence.shape[1]) if presence[row, c] in (PRESENT, ABSENT)]
        if not named:
            continue
        seen = [PRESENCE_CATEGORIES[c] for c in named if presence[row, c] == PRESENT]
        answer = ', '.join(seen) if seen else 'none'
        names = ', '.join(PRESENCE_CATEGORIES[c] for c in named)
        items.append(QAItem(
            id=f's{scene}-{LIST_TASK}-0', task=LIST_TASK,
            question=f'Which of these objects can be seen in these frames: {names}? '
                     'Answer with the ones you see, in this order, or none.',
            options=[], answer=answer, answer_type='text', benchmark=BENCHMARK,
            answer_text=answer, meta={'present': seen}))
    return items
