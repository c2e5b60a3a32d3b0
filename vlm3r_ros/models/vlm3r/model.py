"""`Vlm3rModel`: per-frame visual tokens and spatial question answering with prefix KV reuse.

Per frame (`encode_frame`, cached by the pipeline so a question never re-runs vision/geometry):
SigLIP features -> fusion with CUT3R tokens (cross-attention, VLM-3R) -> mlp2x_gelu projector
-> 2x2 pooling -> [+ Video-3D LLM position encoding] -> newline tokens.
Per question (`answer`, `choose`): qwen_1_5 conversation with all frames' tokens at the `<image>`
position, greedy decoding. The KV cache of the prefix (system text + visual tokens) is kept in
a small LRU keyed by the frame set, so a repeated question only prefills the question tokens.

Not thread-safe by design beyond a per-instance lock: one worker thread calls it; there is no
global state.
"""

from __future__ import annotations

import contextlib
import copy
import re
import string
import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from vlm3r_ros.models.profiles import Profile, get_profile
from vlm3r_ros.models.video3d_pe import video3d_position_encoding
from vlm3r_ros.models.vlm3r.network import (
    Vlm3rNet, build_network, randomize_, torch_dtype)
from vlm3r_ros.models.vlm3r.prefix_cache import PrefixCache, PrefixEntry, truncate_cache
from vlm3r_ros.models.vlm3r.prompt import ChatPrompt, qwen_1_5_prompt
from vlm3r_ros.models.vlm3r.tokenizer import (IM_END, build_tiny_tokenizer, plain_token_ids,
                                              stop_token_ids)
from vlm3r_ros.models.vlm3r.vision import preprocess_image, siglip_features
from vlm3r_ros.models.vlm3r.visual_tokens import add_newline_tokens, pool_tokens


@dataclass(frozen=True)
class AnswerStats:
    """What the last `answer` call did.

    prefix_hit: the prefix KV cache was reused; prefix_tokens: tokens in the prefix (system text
    + visual tokens); prefilled_tokens: tokens run through the LLM before decoding in this call
    (question only on a hit, prefix + question on a miss); generated_tokens: new tokens decoded
    (stop token excluded); seconds: wall time of the call.
    """

    prefix_hit: bool
    prefix_tokens: int
    prefilled_tokens: int
    generated_tokens: int
    seconds: float


class AnswerStream(Iterator[str]):
    """The iterator :meth:`Vlm3rModel.stream_answer` returns: answer text pieces as decoded.

    ``text`` is the text so far (the final answer once exhausted); ``close_and_text``
    stops decoding (releasing the model lock and restoring the prefix cache) and returns it.
    """

    def __init__(self, pieces: Generator[str, None, str]) -> None:
        """Wrap the model's decoding generator."""
        self._pieces = pieces
        self.text = ''
        self.done = False

    def __next__(self) -> str:
        """Return the next piece; raise StopIteration (value: the answer) at the end."""
        try:
            piece = next(self._pieces)
        except StopIteration as stop:
            self.done = True
            self.text = str(stop.value)
            raise
        self.text += piece
        return piece

    def close_and_text(self) -> str:
        """Stop decoding now; return the text generated so far (stripped)."""
        self._pieces.close()
        self.done = True
        self.text = self.text.strip()
        return self.text


# What `number_distribution` lets an answer be: a prefix while growing, a number to end.
_NUMBER_PREFIX = re.compile(r'\d+(\.\d*)?|\d*\.\d*')
_NUMBER = re.compile(r'\d+(\.\d+)?')


def frame_tokens_from_features(net: Vlm3rNet, profile: Profile, features: torch.Tensor,
                               geometry: torch.Tensor | None,
                               world_points: np.ndarray | torch.Tensor | None = None
                               ) -> torch.Tensor:
    """Turn SigLIP features of F frames into their LLM tokens, (F, tokens_per_frame, hidden).

    `features` (F, grid*grid, vision_hidden); `geometry` (F, M, geometry_dim) CUT3R tokens for
    'cross_attention' (None otherwise); `world_points` (H', W', 3) for one frame with
    'position_encoding'. Fusion -> projector -> pooling -> [+ 3D position encoding] -> newline
    tokens: the one path both `Vlm3rModel.encode_frame` and the trainer (with gradients) use.
    """
    if geometry is not None:
        assert net.fusion_block is not None
        features = net.fusion_block(features, geometry)
    tokens = net.mm_projector(features)
    tokens = pool_tokens(tokens, profile.vision_grid, profile.spatial_pool_stride,
                         profile.spatial_pool_mode)
    if profile.fusion == 'position_encoding' and world_points is not None:
        grid = profile.pooled_grid
        encoding = video3d_position_encoding(
            world_points, grid, grid, tokens.shape[-1], profile.pe_min_xyz, profile.pe_max_xyz,
            profile.pe_voxel_size, profile.pe_temperature)
        tokens = tokens + encoding.to(device=tokens.device, dtype=tokens.dtype)
    return torch.stack([add_newline_tokens(t, net.image_newline, profile.newline_position)
                        for t in tokens])


class Vlm3rModel:
    """The fused LMM behind the pipeline's `SpatialModel` seam."""

    def __init__(self, net: Vlm3rNet, tokenizer: PreTrainedTokenizerBase, profile: Profile) -> None:
        """Wrap a built network and its tokenizer.

        Raises ValueError when the tokenizer has more tokens than the embedding has rows, or
        the network's fusion block does not match `profile.fusion`.
        """
        vocab_rows = net.language_model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab_rows:
            raise ValueError(f'tokenizer has {len(tokenizer)} tokens but the LLM only '
                             f'{vocab_rows} rows')
        if (profile.fusion == 'cross_attention') != (net.fusion_block is not None):
            raise ValueError(f'network does not match fusion mode {profile.fusion!r}')
        self._net = net.eval()
        self._tokenizer = tokenizer
        self._profile = profile
        self._stop_ids = stop_token_ids(tokenizer)
        self._prefix_cache = PrefixCache(profile.max_cached_prefixes)
        self._lock = threading.RLock()
        self.last_stats: AnswerStats | None = None

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def from_profile(cls, profile: Profile | str, **overrides: Any) -> Vlm3rModel:
        """Build the model a profile describes.

        With `base_model_dir` set, load real weights through `checkpoint.load_vlm3r` (raises
        CheckpointError on any problem). Without it, only a profile with a `seed` (tiny) may be
        built: seeded random weights and the locally built tiny tokenizer. Raises ValueError for
        a real-size profile without weight directories.
        """
        prof = get_profile(profile, **overrides) if isinstance(profile, str) else profile
        if prof.base_model_dir is not None:
            from vlm3r_ros.models.vlm3r.checkpoint import load_vlm3r  # avoid an import cycle
            return load_vlm3r(prof.base_model_dir, prof.lora_dir, profile=prof,
                              vision_tower_dir=prof.vision_tower_dir,
                              tokenizer_dir=prof.tokenizer_dir,
                              non_lora_path=prof.non_lora_path)
        if prof.seed is None:
            raise ValueError(f'profile {prof.name!r} needs base_model_dir (and lora_dir) with '
                             'local weights; random weights are only built for seeded profiles')
        return cls.random(prof, seed=prof.seed)

    @classmethod
    def random(cls, profile: Profile, *, seed: int = 0,
               tokenizer: PreTrainedTokenizerBase | None = None) -> Vlm3rModel:
        """Build a model with random weights (tests, benchmarks); never reads or downloads files.

        The tokenizer defaults to the tiny one; the vocabulary is `profile.llm_vocab_size` or,
        when None, the tokenizer's length. On CPU the weights come from the default
        initialisers under a private RNG seeded with `seed` (bit-reproducible); on other
        devices storage is allocated there directly and filled by `randomize_`.
        """
        tok = tokenizer if tokenizer is not None else build_tiny_tokenizer()
        vocab = profile.llm_vocab_size or len(tok)
        dtype = torch_dtype(profile.dtype)
        if torch.device(profile.device).type == 'cpu':
            net = build_network(profile, vocab, device=profile.device, dtype=dtype, seed=seed)
        else:
            net = build_network(profile, vocab, device=profile.device, dtype=dtype, init='empty')
            randomize_(net, seed)
        return cls(net, tok, profile)

    # ----------------------------------------------------------------------------- properties
    @property
    def profile(self) -> Profile:
        """The profile this model was built for."""
        return self._profile

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer used for prompts and answers."""
        return self._tokenizer

    @property
    def net(self) -> Vlm3rNet:
        """The underlying modules (weights)."""
        return self._net

    @property
    def device(self) -> torch.device:
        """Device holding the weights."""
        return self._net.image_newline.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights and of the visual tokens."""
        return self._net.image_newline.dtype

    @property
    def hidden_size(self) -> int:
        """LLM hidden size = width of each visual token."""
        return int(self._net.image_newline.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        """Rows of each `encode_frame` result."""
        return self._profile.tokens_per_frame

    # ----------------------------------------------------------------------------- vision
    def _geometry(self, geometry_tokens: torch.Tensor | None) -> torch.Tensor:
        """Validate CUT3R tokens and return them as (1, N, Dg) on the model device/dtype."""
        if geometry_tokens is None:
            raise ValueError("fusion 'cross_attention' needs geometry_tokens: the CUT3R camera "
                             'token followed by its patch tokens, shape (1 + P, '
                             f'{self._profile.geometry_dim}); got None')
        tokens = torch.as_tensor(geometry_tokens)
        if tokens.ndim == 3 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] != self._profile.geometry_dim:
            raise ValueError('geometry_tokens must have shape '
                             f'(1 + P, {self._profile.geometry_dim}), '
                             f'got {tuple(tokens.shape)}')
        select = self._profile.geometry_select
        if select == 'patch_tokens':
            tokens = tokens[1:]
        elif select == 'camera_tokens':
            tokens = tokens[:1]
        if tokens.shape[0] < 1:
            raise ValueError(f'geometry_tokens hold no {select} (camera token first, then patches)')
        return tokens.to(device=self.device, dtype=self.dtype)[None]

    def encode_frame(self, image: np.ndarray, geometry_tokens: torch.Tensor | None = None,
                     world_points: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Return one frame's visual tokens, shape (tokens_per_frame, hidden_size).

        `image` is (H, W, 3) uint8 RGB. fusion 'cross_attention' needs `geometry_tokens`
        (1 + P, geometry_dim) from CUT3R (camera token first; `profile.geometry_select` picks
        all of them, only the patches or only the camera token); 'position_encoding' needs
        `world_points` (H', W', 3) world xyz in metres (non-finite = invalid). Unused inputs are
        ignored. Raises ValueError when a needed input is missing or malformed.
        """
        prof = self._profile
        if prof.fusion == 'position_encoding' and world_points is None:
            raise ValueError("fusion 'position_encoding' needs world_points: per-pixel world "
                             'coordinates (H, W, 3) in metres; got None')
        with self._lock, torch.no_grad():
            geometry = self._geometry(geometry_tokens) if prof.fusion == 'cross_attention' else None
            pixels = preprocess_image(image, prof.vision_image_size, prof.image_mean,
                                      prof.image_std, self.device, self.dtype)
            features = siglip_features(self._net.vision_tower, pixels)
            return frame_tokens_from_features(self._net, prof, features, geometry,
                                              world_points)[0]

    # ----------------------------------------------------------------------------- language
    def _ids(self, text: str) -> torch.Tensor:
        """Tokenize template `text` (its chat markers become special tokens); return (n,)
        int64 on the device."""
        ids = self._tokenizer(text, add_special_tokens=False)['input_ids']
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def suffix_ids(self, chat: ChatPrompt) -> torch.Tensor:
        """Return the ids after the visual tokens: the caller's text as plain text (no
        special token, whatever it contains), then the template's tail."""
        user = plain_token_ids(self._tokenizer, chat.user)
        tail = self._tokenizer(chat.tail, add_special_tokens=False)['input_ids']
        return torch.tensor(user + list(tail), dtype=torch.long, device=self.device)

    def _frames(self, frame_tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Validate frame tokens and return them on the model device/dtype."""
        frames: list[torch.Tensor] = []
        for index, tokens in enumerate(frame_tokens):
            if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 \
                    or tokens.shape[1] != self.hidden_size:
                shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
                raise ValueError(f'frame_tokens[{index}] must be a (T, {self.hidden_size}) tensor '
                                 f'from encode_frame, got {shape}')
            frames.append(tokens.to(device=self.device, dtype=self.dtype))
        return frames

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Return (n, hidden) input embeddings of token ids."""
        return self._net.language_model.get_input_embeddings()(ids)

    def _prefill_prefix(self, prefix_text: str, frames: Sequence[torch.Tensor],
                        originals: Sequence[torch.Tensor]) -> PrefixEntry:
        """Run system text + visual tokens through the LLM and return the filled KV cache."""
        language_model = self._net.language_model
        sequence = torch.cat([self._embed(self._ids(prefix_text)), *frames], dim=0)[None]
        cache = DynamicCache(config=language_model.config)
        language_model.model(inputs_embeds=sequence, past_key_values=cache, use_cache=True)
        return PrefixEntry(cache=cache, length=int(sequence.shape[1]), frames=tuple(originals))

    def _decode(self, ids: Sequence[int]) -> str:
        """Decode generated ids; ids of padded embedding rows beyond the tokenizer are dropped."""
        size = len(self._tokenizer)
        text = self._tokenizer.decode([i for i in ids if i < size], skip_special_tokens=True)
        return text.strip()

    @contextlib.contextmanager
    def _prefixed(self, prompt: str, frame_tokens: Sequence[torch.Tensor],
                  prefix_key: Hashable | None) -> Iterator[tuple[PrefixEntry, bool, torch.Tensor]]:
        """Yield (prefix entry, cache hit, question token ids); restore the prefix on exit.

        Caller holds the lock and no_grad. The entry's cache holds exactly the prefix on entry;
        whatever the caller appends (question, answer tokens) is cropped away afterwards, even
        on errors, so the next question starts from the prefix again.
        """
        frames = self._frames(frame_tokens)
        chat = qwen_1_5_prompt(prompt, self._profile.system_prompt, has_image=bool(frames))
        key = prefix_key if prefix_key is not None else tuple(id(t) for t in frame_tokens)
        entry = self._prefix_cache.lookup(key, frame_tokens)
        hit = entry is not None
        if entry is None:
            entry = self._prefill_prefix(chat.prefix, frames, list(frame_tokens))
            self._prefix_cache.store(key, entry)
        try:
            yield entry, hit, self.suffix_ids(chat)
        finally:
            truncate_cache(entry.cache, entry.length)

    def _extend(self, entry: PrefixEntry, ids: torch.Tensor) -> torch.Tensor:
        """Append (n,) token ids to the entry's cache; return the next token's logits (vocab,)."""
        output = self._net.language_model(input_ids=ids[None], past_key_values=entry.cache,
                                          use_cache=True, logits_to_keep=1)
        return output.logits[0, -1]

    def answer(self, prompt: str, frame_tokens: Sequence[torch.Tensor], max_new_tokens: int = 16,
               prefix_key: Hashable | None = None,
               on_token: Callable[[str], bool | None] | None = None) -> str:
        """Answer `prompt` about the frames by greedy decoding; return the stripped text.

        `prompt` is the full user text; the visual tokens of `frame_tokens` (encode_frame
        results, in time order) go at the reference `<image>` position before it. The prefix
        KV cache is looked up by `prefix_key` (default: the identities of the frame tensors) and
        only reused when the frames are the same tensors (or equal ones); see `last_stats`.
        Decoding stops at `<|im_end|>` / `<|endoftext|>` or after `max_new_tokens`. Raises
        ValueError for malformed frames or a negative `max_new_tokens`.

        `on_token`, when given, is called after each decoded token with the text it added
        (possibly ''; see :meth:`stream_answer`; the pieces concatenate to the returned text).
        Returning False stops decoding at once (cancel): the text decoded so far is returned.
        """
        stream = self.stream_answer(prompt, frame_tokens, max_new_tokens, prefix_key)
        while True:
            try:
                piece = next(stream)
            except StopIteration as done:
                return str(done.value)
            if on_token is not None and on_token(piece) is False:
                return stream.close_and_text()

    def stream_answer(self, prompt: str, frame_tokens: Sequence[torch.Tensor],
                      max_new_tokens: int = 16,
                      prefix_key: Hashable | None = None) -> AnswerStream:
        """Return an iterator over the answer text as it is decoded, token by token.

        Same decoding as :meth:`answer`. One item per decoded token: the text it added ('' when
        it added none yet, e.g. it ends inside a multi-byte character, whose text then comes
        with a later item); the items concatenate to the final stripped answer, which
        is also the iterator's return value (``StopIteration.value``, or ``text``). The model
        lock is held from the first ``next`` until the iterator is exhausted or closed: drive
        it from one thread and close it (``close_and_text``) to stop decoding early.
        """
        return AnswerStream(self._token_pieces(prompt, frame_tokens, max_new_tokens,
                                               prefix_key))

    def _token_pieces(self, prompt: str, frame_tokens: Sequence[torch.Tensor],
                      max_new_tokens: int, prefix_key: Hashable | None
                      ) -> Generator[str, None, str]:
        """Yield the text each greedy token adds; return the decoded answer (see answer).

        Gradients are off around every model call but not across the yields (grad mode is
        thread state: the consumer's code between items runs with its own mode).
        """
        if max_new_tokens < 0:
            raise ValueError('max_new_tokens must be >= 0')
        start = time.perf_counter()
        generated: list[int] = []
        emitted = ''
        with self._lock, contextlib.ExitStack() as scope:
            with torch.no_grad():
                entry, hit, question = scope.enter_context(
                    self._prefixed(prompt, frame_tokens, prefix_key))
            question_tokens = int(question.shape[0]) if max_new_tokens > 0 else 0
            try:
                if max_new_tokens > 0:
                    with torch.no_grad():
                        logits = self._extend(entry, question)
                    for step in range(max_new_tokens):
                        token = int(torch.argmax(logits))
                        if token in self._stop_ids:
                            break
                        generated.append(token)
                        text = self._decode(generated)
                        piece = ''  # one item per token, so a consumer can stop at each
                        if text.startswith(emitted) and not text.endswith('\ufffd'):
                            piece, emitted = text[len(emitted):], text
                        yield piece
                        if step + 1 < max_new_tokens:
                            with torch.no_grad():
                                logits = self._extend(entry, torch.tensor(
                                    [token], device=self.device))
            except GeneratorExit:  # closed early (cancel): still account for the call
                self._record(hit, entry, question_tokens, len(generated), start)
                raise
            self._record(hit, entry, question_tokens, len(generated), start)
        text = self._decode(generated)
        if text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted):]  # a held-back tail (e.g. a completed character)
        return text

    def choose(self, prompt: str, frame_tokens: Sequence[torch.Tensor], n_options: int,
               prefix_key: Hashable | None = None) -> tuple[int, list[float]]:
        """Score the option letters A.. as the first answer token; return (index, probabilities).

        Probabilities are a softmax over the `n_options` letter logits only (they sum to 1);
        the index is the most likely letter. Uses the same prompt and prefix cache as `answer`.
        Raises ValueError for n_options outside 1..26 or malformed frames.
        """
        if not 1 <= n_options <= 26:
            raise ValueError(f'n_options must be in 1..26, got {n_options}')
        letter_ids = [self._letter_id(letter) for letter in string.ascii_uppercase[:n_options]]
        start = time.perf_counter()
        with self._lock, torch.no_grad(), \
                self._prefixed(prompt, frame_tokens, prefix_key) as (entry, hit, question):
            logits = self._extend(entry, question).float()
            self._record(hit, entry, int(question.shape[0]), 0, start)
        probs = torch.softmax(logits[letter_ids], dim=0)
        return int(torch.argmax(probs)), [float(p) for p in probs]

    def _number_tokens(self) -> dict[int, str]:
        """Return {token id: text} of the tokens made only of digits and '.' (cached)."""
        if getattr(self, '_number_vocab', None) is None:
            vocab = {}
            for index in range(len(self._tokenizer)):
                text = self._tokenizer.decode([index])
                if text and _NUMBER_PREFIX.fullmatch(text.strip()) and text.strip() == text:
                    vocab[index] = text
            self._number_vocab = vocab
        return self._number_vocab

    def number_distribution(self, prompt: str, frame_tokens: Sequence[torch.Tensor],
                            beam: int = 16, max_tokens: int = 6,
                            prefix_key: Hashable | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Return (values, probabilities) of the model's numeric answers, best first.

        A beam search over answers made of number tokens (digits, '.'): at each step every
        beam either ends (its probability times that of `<|im_end|>`, when it is a complete
        number) or grows by a number token; the `beam` likeliest growing answers are kept
        for up to `max_tokens` tokens. Probabilities are renormalised over the ended answers
        (equal values merged). Cost: `max_tokens` forwards of `beam` tokens over a copy of the
        prefix KV cache. Raises ValueError when no number could be formed.
        """
        numbers = self._number_tokens()
        ids = torch.tensor(sorted(numbers), device=self.device)
        texts = [numbers[int(i)] for i in ids]
        end = self._tokenizer.convert_tokens_to_ids(IM_END)
        finished: dict[float, float] = {}
        start = time.perf_counter()
        with self._lock, torch.no_grad(), \
                self._prefixed(prompt, frame_tokens, prefix_key) as (entry, hit, question):
            logp = torch.log_softmax(self._extend(entry, question).float(), dim=-1)[None]
            beams: list[tuple[str, float]] = [('', 0.0)]
            cache = None
            for depth in range(max_tokens + 1):
                grow: list[tuple[float, int, int, str]] = []
                for b, (text, score) in enumerate(beams):
                    if text and _NUMBER.fullmatch(text):
                        value = float(text)
                        finished[value] = np.logaddexp(finished.get(value, -np.inf),
                                                       score + float(logp[b, end]))
                    if depth == max_tokens:
                        continue
                    row = logp[b, ids].cpu().numpy()
                    for k in np.argsort(-row)[:beam * 2]:
                        grown = text + texts[k]
                        if _NUMBER_PREFIX.fullmatch(grown):
                            grow.append((score + float(row[k]), b, int(ids[k]), grown))
                if not grow or depth == max_tokens:
                    break
                grow.sort(key=lambda g: -g[0])
                grow = grow[:beam]
                parents = torch.tensor([g[1] for g in grow], device=self.device)
                if cache is None:
                    cache = copy.deepcopy(entry.cache)
                    cache.batch_repeat_interleave(len(beams))
                cache.batch_select_indices(parents)
                step = torch.tensor([[g[2]] for g in grow], device=self.device)
                out = self._net.language_model(input_ids=step, past_key_values=cache,
                                               use_cache=True)
                logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
                beams = [(g[3], g[0]) for g in grow]
            self._record(hit, entry, int(question.shape[0]), 0, start)
        if not finished:
            raise ValueError('the model formed no number')
        values = np.array(sorted(finished, key=lambda v: -finished[v]))
        scores = np.array([finished[v] for v in values])
        probs = np.exp(scores - scores.max())
        return values, probs / probs.sum()

    def estimate_number(self, prompt: str, frame_tokens: Sequence[torch.Tensor],
                        mode: str = 'median', prefix_key: Hashable | None = None) -> float:
        """Return a number from `number_distribution`: its weighted 'median' or 'expected'
        value. The median suits MRA (robust to a heavy tail). Raises ValueError for an
        unknown mode."""
        if mode not in ('median', 'expected'):
            raise ValueError(f"mode must be 'median' or 'expected', got {mode!r}")
        values, probs = self.number_distribution(prompt, frame_tokens, prefix_key=prefix_key)
        if mode == 'expected':
            return float((values * probs).sum())
        order = np.argsort(values)
        cdf = np.cumsum(probs[order])
        return float(values[order][int(np.searchsorted(cdf, 0.5))])

    def _letter_id(self, letter: str) -> int:
        """Return the token id an answer starting with `letter` begins with."""
        ids = self._tokenizer(letter, add_special_tokens=False)['input_ids']
        if not ids:
            raise ValueError(f'the tokenizer cannot encode option letter {letter!r}')
        return int(ids[0])

    def _record(self, hit: bool, entry: PrefixEntry, question_tokens: int, generated: int,
                start: float) -> None:
        """Store `last_stats` for the call that started at `start`."""
        self.last_stats = AnswerStats(
            prefix_hit=hit, prefix_tokens=entry.length,
            prefilled_tokens=question_tokens + (0 if hit else entry.length),
            generated_tokens=generated, seconds=time.perf_counter() - start)

    def next_token_logits(self, prompt: str, frame_tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return float32 (vocab,) logits of the first answer token, computed without any cache.

        A reference path for checks (and usable for scoring option letters). Raises ValueError
        for malformed frames.
        """
        with self._lock, torch.no_grad():
            frames = self._frames(frame_tokens)
            chat = qwen_1_5_prompt(prompt, self._profile.system_prompt, has_image=bool(frames))
            sequence = torch.cat([self._embed(self._ids(chat.prefix)), *frames,
                                  self._embed(self.suffix_ids(chat))], dim=0)[None]
            output = self._net.language_model(inputs_embeds=sequence, use_cache=False,
                                              logits_to_keep=1)
            return output.logits[0, -1].float()

    # ----------------------------------------------------------------------------- cache
    def clear_cache(self) -> None:
        """Drop every cached prefix KV (frees its memory)."""
        with self._lock:
            self._prefix_cache.clear()

    def cache_info(self) -> dict[str, int]:
        """Return prefix-cache counters: entries, capacity, hits, misses, bytes."""
        with self._lock:
            cache = self._prefix_cache
            return {'entries': len(cache), 'capacity': cache.capacity, 'hits': cache.hits,
                    'misses': cache.misses, 'bytes': cache.nbytes()}
