"""Prompt building and answer parsing.

Two parsers turn the model's text into response fields (``value``, ``option_index``):

* lenient (:func:`parse_answer`, the node's default, operator-facing): the first
  whitespace-separated token, one trailing '.' removed, option letters
  case-insensitive, numbers with ``float()``. It forgives a leading space or a newline.
* official (:func:`parse_answer_official`, the reference protocol and ``vlm3r-eval``'s
  scoring): the official evaluators' rule, first piece of a split on ' ' only, every
  trailing '.' removed, then stripped (see :func:`official_first_token`).

Anything else is "no value".
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Sequence

ANSWER_TYPES = ('auto', 'text', 'number', 'option')

VIDEO_PREFIX = 'These are frames of a video.'
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."
NUMBER_SUFFIX = 'Please answer the question using a single word or phrase.'
MAX_OPTIONS = len(string.ascii_uppercase)


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer as the scorer sees it.

    ``value`` is NaN when the first token is not a number; ``option_index`` is -1 when
    there were no options or the first token is not one of their letters.
    """

    text: str
    value: float = math.nan
    option_index: int = -1

    @property
    def option_letter(self) -> str:
        """Return the chosen option's letter, or '' when none was chosen."""
        return string.ascii_uppercase[self.option_index] if self.option_index >= 0 else ''


def option_letter(index: int) -> str:
    """Return the letter of option ``index`` (0 -> 'A'); raises ValueError out of range."""
    if not 0 <= index < MAX_OPTIONS:
        raise ValueError(f'option index {index} out of range 0..{MAX_OPTIONS - 1}')
    return string.ascii_uppercase[index]


def strip_option_label(option: str) -> str:
    """Return an option's text without a leading 'A. ' style label, if it has one."""
    text = option.strip()
    if len(text) >= 2 and text[0].upper() in string.ascii_uppercase and text[1] in '.)':
        return text[2:].strip()
    return text


def resolve_answer_type(answer_type: str, options: Sequence[str]) -> str:
    """Return 'option', 'number' or 'text' for a request's hint and options.

    'auto' means 'option' when options are given and 'number' otherwise (every
    non-multiple-choice VSI-Bench task is numeric). Raises ValueError for an unknown
    hint or for 'option' without options.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f'answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}')
    if answer_type == 'auto':
        return 'option' if options else 'number'
    if answer_type == 'option' and not options:
        raise ValueError("answer_type 'option' needs at least one option")
    return answer_type


def build_prompt(question: str, options: Sequence[str] = (), answer_type: str = 'auto') -> str:
    """Return the user text for a question in the VSI-Bench prompt format.

    Options are labelled 'A. ...', 'B. ...' (labels already present are replaced).
    Raises ValueError for more than 26 options or an invalid answer type.
    """
    if len(options) > MAX_OPTIONS:
        raise ValueError(f'at most {MAX_OPTIONS} options are supported, got {len(options)}')
    kind = resolve_answer_type(answer_type, options)
    lines = [VIDEO_PREFIX, question.strip()]
    if options:
        lines.append('Options:')
        lines.extend(f'{option_letter(i)}. {strip_option_label(o)}' for i, o in enumerate(options))
    if kind == 'option':
        lines.append(OPTION_SUFFIX)
    elif kind == 'number':
        lines.append(NUMBER_SUFFIX)
    return '\n'.join(lines)


def first_token(text: str) -> str:
    """Return the first whitespace-separated token without a trailing '.' ('' if none)."""
    parts = text.strip().split()
    if not parts:
        return ''
    token = parts[0]
    return token[:-1] if token.endswith('.') else token


def parse_number(token: str) -> float:
    """Return ``float(token)`` when it is a finite number, else NaN."""
    try:
        value = float(token)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def parse_answer(text: str, options: Sequence[str] = ()) -> ParsedAnswer:
    """Parse a model answer into (text, numeric value, option index).

    The option index is set when the first token is one of the options' letters
    (case-insensitive); the value is set when the first token parses as a number.
    Never raises.
    """
    token = first_token(text)
    index = -1
    if options and len(token) == 1 and token.upper() in string.ascii_uppercase:
        candidate = string.ascii_uppercase.index(token.upper())
        if candidate < len(options):
            index = candidate
    return ParsedAnswer(text=text.strip(), value=parse_number(token), option_index=index)


ANSWER_PARSERS = ('lenient', 'official')


def official_first_token(text: str) -> str:
    """Return the token the official VSI-Bench/VSTI-Bench evaluators read: the text up to
    the first ' ' (only the space character splits), every trailing '.' removed, then
    stripped. A leading space gives '' and 'A.\\n' gives 'A.' (the dots go before the
    newline does)."""
    head = text.split(' ', 1)[0]
    while head.endswith('.'):
        head = head[:-1]
    return head.strip()


def parse_answer_official(text: str, options: Sequence[str] = ()) -> ParsedAnswer:
    """Parse a model answer with the official evaluators' rule (benchmark mode).

    The model's text is stripped first (the reference strips the decoded output), then
    :func:`official_first_token` is read: an option index when it is one of the options'
    letters (case-insensitive), a value when ``float()`` reads it as a finite number.
    Never raises.
    """
    text = text.strip()
    token = official_first_token(text)
    index = -1
    if options and len(token) == 1 and token.upper() in string.ascii_uppercase:
        candidate = string.ascii_uppercase.index(token.upper())
        if candidate < len(options):
            index = candidate
    return ParsedAnswer(text=text, value=parse_number(token), option_index=index)


def parse_answer_with(parser: str, text: str, options: Sequence[str] = ()) -> ParsedAnswer:
    """Parse with ``parser``: 'lenient' (:func:`parse_answer`, the operator-facing default)
    or 'official' (:func:`parse_answer_official`). Raises ValueError for another name."""
    if parser == 'lenient':
        return parse_answer(text, options)
    if parser == 'official':
        return parse_answer_official(text, options)
    raise ValueError(f'answer parser must be one of {ANSWER_PARSERS}, got {parser!r}')
