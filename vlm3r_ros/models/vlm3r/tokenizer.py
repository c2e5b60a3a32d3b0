"""Tokenizers: the real Qwen2 tokenizer from a local directory, or a tiny one built locally.

The tiny tokenizer is a byte-level BPE trained (deterministically, in milliseconds) on a small
built-in corpus of spatial-question text with the Qwen chat special tokens, so the tiny profile
never touches the model hub. Byte-level coverage means any text encodes and decodes losslessly.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

ENDOFTEXT = '<|endoftext|>'
IM_START = '<|im_start|>'
IM_END = '<|im_end|>'
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
TINY_VOCAB_SIZE = 512

_OBJECTS = ('chair', 'table', 'sofa', 'bed', 'tv', 'door', 'window', 'lamp', 'toilet', 'sink',
            'refrigerator', 'stove', 'desk', 'shelf', 'cabinet', 'plant', 'monitor', 'pillow')
_TEMPLATES = (
    'These are frames of a video.',
    'How many {a}(s) are in this room?',
    'What is the length of the longest dimension (length, width, or height) of the {a}, '
    'measured in centimeters?',
    'What is the size of this room (in square meters)? If multiple rooms are shown, estimate '
    'the size of the combined space.',
    'Measuring from the closest point of each object, what is the direct distance between the '
    '{a} and the {b} (in meters)?',
    'Measuring from the closest point of each object, which of these objects (A, B, C, D) is '
    'the closest to the {a}?',
    'If I am standing by the {a} and facing the {b}, is the {c} to my left, right, or back?',
    'What will be the first-time appearance order of the following categories in the video: '
    '{a}, {b}, {c}, {d}?',
    'You are a robot beginning at the {a} facing the {b}. You want to navigate to the {c}. You '
    "will perform the following actions (Note: for each [please fill in], choose either 'turn "
    "back,' 'turn left,' or 'turn right.'): 1. [please fill in] 2. Go forward until the {d} 3. "
    '[please fill in] You have reached the final destination.',
    'Options:\nA. {a}\nB. {b}\nC. {c}\nD. {d}',
    "Answer with the option's letter from the given choices directly.",
    'Please answer the question using a single word or phrase.',
    'How far did the camera move between frame 1 and frame 8 (in meters)?',
    'Did the camera move forward, backward, left or right?',
    'You are a helpful assistant.',
)


def tiny_corpus() -> list[str]:
    """Return the fixed training corpus of the tiny tokenizer (deterministic order)."""
    lines: list[str] = []
    count = len(_OBJECTS)
    for index, template in enumerate(_TEMPLATES):
        for shift in range(count):
            names = [_OBJECTS[(shift + index + k * 5) % count] for k in range(4)]
            lines.append(template.format(a=names[0], b=names[1], c=names[2], d=names[3]))
    lines.extend(f'{n} {n / 10:.1f} {n * 3 % 100}.{n % 10} m cm' for n in range(120))
    lines.extend(f'{letter}. {letter}' for letter in 'ABCDEFGH')
    lines.append('left right back forward backward up down yes no turn go stop')
    lines.append(f'{IM_START}system\nYou are a helpful assistant.{IM_END}\n{IM_START}user\n')
    lines.append(f'{IM_END}\n{IM_START}assistant\n')
    return lines


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train and return the tiny byte-level BPE tokenizer (same result on every call).

    Special tokens: `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos), as in Qwen2.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=IM_END,
                                   pad_token=ENDOFTEXT, additional_special_tokens=[IM_START])


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from local files only (never the hub).

    Raises FileNotFoundError when the directory is missing and OSError/ValueError from
    transformers when the files are unusable.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f'tokenizer directory {path} does not exist')
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Return the ids that end an answer: `<|im_end|>`, `<|endoftext|>` and the eos token."""
    ids: set[int] = set()
    for token in (IM_END, ENDOFTEXT):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def added_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Return the ids of every special and added token (chat markers, padding, eos...)."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    ids.update(int(i) for i in getattr(tokenizer, 'added_tokens_decoder', {}))
    return frozenset(ids)


def plain_token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Tokenise untrusted ``text`` as plain text: never to a special or added token.

    A caller's question containing `<|im_end|>` / `<|im_start|>` (or any other added
    token's text) would otherwise close the user turn and open a system or assistant turn.
    Special-token parsing is switched off (``split_special_tokens``); added tokens that
    the tokenizer still matches are spelt piece by piece. Raises ValueError if an added id
    remains (a tokenizer that cannot encode the text as plain text).
    """
    forbidden = added_token_ids(tokenizer)
    ids = _encode(tokenizer, text)
    if forbidden.isdisjoint(ids):
        return ids
    contents = sorted({str(t) for t in getattr(tokenizer, 'added_tokens_decoder', {}).values()}
                      | set(tokenizer.all_special_tokens), key=len, reverse=True)
    pattern = re.compile('|'.join(re.escape(c) for c in contents if c))
    ids = []
    position = 0
    for match in pattern.finditer(text):
        ids += _encode(tokenizer, text[position:match.start()])
        for char in match.group(0):  # one character at a time: no added token can match
            ids += _encode(tokenizer, char)
        position = match.end()
    ids += _encode(tokenizer, text[position:])
    leaked = forbidden.intersection(ids)
    if leaked:
        raise ValueError(f'text cannot be tokenised without special tokens {sorted(leaked)}')
    return ids


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False,
                          split_special_tokens=True)['input_ids'])
