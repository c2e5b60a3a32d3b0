"""The reference `qwen_1_5` conversation, split at the `<image>` placeholder.

Reference prompt for one video:
    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n
    {question}<|im_end|>\\n<|im_start|>assistant\\n
The reference tokenizes the text before and after `<image>` separately and splices the visual
embeddings in between, so the part before the image (plus the visual tokens) is a prefix shared
by every question on the same frames: that is what the prefix KV cache keeps.

The caller's text (``user``) is kept apart from the template so that it is tokenised as plain
text (``tokenizer.plain_token_ids``): chat markers typed into a question stay characters.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm3r_ros.models.vlm3r.tokenizer import IM_END, IM_START

IMAGE_PLACEHOLDER = '<image>'


@dataclass(frozen=True)
class ChatPrompt:
    """Template text before the visual tokens; after them the caller's text, then the
    template's tail (end of the user turn, start of the assistant turn)."""

    prefix: str
    user: str
    tail: str

    @property
    def suffix(self) -> str:
        """Return all the text after the visual tokens (``user`` + ``tail``)."""
        return self.user + self.tail


def qwen_1_5_prompt(question: str, system: str = 'You are a helpful assistant.',
                    has_image: bool = True) -> ChatPrompt:
    """Return the qwen_1_5 conversation for `question`, split at the image position.

    `question` is the full user text (e.g. 'These are frames of a video.\\n...'). With
    `has_image` the user turn is '<image>\\n' + question as in the reference; without it the
    user turn is just the question. Raises ValueError when the question itself contains the
    '<image>' placeholder (it would be ambiguous where the frames go).
    """
    if IMAGE_PLACEHOLDER in question:
        raise ValueError('the question must not contain the <image> placeholder')
    prefix = f'{IM_START}system\n{system}{IM_END}\n{IM_START}user\n'
    body = f'\n{question}' if has_image else question
    return ChatPrompt(prefix=prefix, user=body, tail=f'{IM_END}\n{IM_START}assistant\n')
