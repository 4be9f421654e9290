"""The stream conversation format: what the model reads and what it learns.

A conversation is a list of messages (system, user, assistant, stream). `StreamTemplate` renders it to text while
recording the character spans that are learned, tokenizes the whole text once with offsets, and turns the spans into
labels (each learned token is the target of the position before it). The engine uses the same template for the
prompt pieces it feeds at inference, so training and inference read identical text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import LiveConfig

IGNORE_INDEX = -100

# Llama-3's pre-tokenizer pattern: punctuation may absorb following newlines, so `]\n` is one token as in Llama-3.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tiny_tokenizer():
    """A deterministic byte-level BPE tokenizer built in code (no files): 256 byte tokens, one merge (`]\\n`), and
    `<s>` / `</s>`. With `<v>` added it has 260 entries, so `<v>` = 259 = the tiny LLM's vocab size, like Llama-3."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["]Ċ"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("]", "Ċ")]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def add_placeholder_token(tokenizer, placeholder: str) -> int:
    """Add the frame placeholder as a special token (never merged with neighbours) if missing; return its id."""
    from transformers import AddedToken

    if placeholder not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(placeholder, special=True, normalized=False)], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(placeholder)


def _single_token_id(tokenizer, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"the {what} {text!r} must be exactly one token for this tokenizer, not {len(ids)}: {ids}")
    return ids[0]


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the model's decisions depend on, looked up by name once."""

    v_placeholder: int
    interval: int | None
    eos: int

    @property
    def silence(self) -> int:
        """The token that means "stay silent" after a frame: the interval token, or eos when there is none (v1)."""
        return self.interval if self.interval is not None else self.eos


@dataclass
class Tokenized:
    text: str
    input_ids: list[int]
    labels: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "input_ids": self.input_ids, "labels": self.labels}


class StreamTemplate:
    """Renders stream conversations to text and token ids for one tokenizer and one `LiveConfig`."""

    def __init__(self, tokenizer, config: LiveConfig):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is needed: its character offsets place the labels")
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token before building the template")
        self.tokenizer = tokenizer
        self.config = config
        v_id = add_placeholder_token(tokenizer, config.v_placeholder)
        interval = config.frame_token_interval
        self.ids = SpecialIds(
            v_placeholder=v_id,
            interval=None if interval is None else _single_token_id(tokenizer, interval, "frame interval token"),
            eos=tokenizer.eos_token_id,
        )
        self.bos = tokenizer.bos_token or ""
        self.eos = tokenizer.eos_token
        self.frame_text = config.v_placeholder * config.frame_num_tokens

    # ------------------------------------------------------------------ text pieces (training and inference)
    def system_text(self, system_prompt: str | None = None) -> str:
        return f"{self.bos}{self.config.system_prompt if system_prompt is None else system_prompt}\n"

    def stream_text(self, num_frames: int) -> str:
        return "\n[" + (self.config.frame_token_interval or "").join([self.frame_text] * num_frames) + "]"

    @staticmethod
    def user_text(content: str) -> str:
        return f"\nUser: {content}"

    def assistant_text(self, content: str) -> str:
        return f"\nAssistant: {content}{self.eos}"

    # prompts that continue a conversation
    GENERATION_PROMPT = "\nAssistant:"
    STREAM_PROMPT = "\n["
    STREAM_GENERATION_PROMPT = "]\nAssistant:"

    @staticmethod
    def stream_query_prompt(query: str) -> str:
        """A query arriving mid-stream closes the stream, then asks."""
        return f"]\nUser: {query}\nAssistant:"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ conversations
    def render(self, conversation: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """The text of a conversation and the character spans whose tokens are learned."""
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        offset = 0
        for i, message in enumerate(conversation):
            role = message.get("role")
            if role in ("system", "user", "assistant") and not isinstance(message.get("content"), str):
                raise ValueError(
                    f"message {i}: a {role} message needs a string content, got {type(message.get('content')).__name__}"
                )
            if role == "system":
                if i != 0:
                    raise ValueError(f"message {i}: a system message may only come first")
                text = self.system_text(message["content"])
            elif role == "user":
                text = self.user_text(message["content"])
            elif role == "assistant":
                text = self.assistant_text(message["content"])
                if message.get("learn", False):
                    start = offset + 1  # from `Assistant: ` (after the newline) to the end of eos
                    spans.append((start, offset + len(text)))
            elif role == "stream":
                num_frames = message.get("num_frames")
                if not isinstance(num_frames, int) or num_frames < 0:
                    raise ValueError(f"message {i}: a stream message needs an int num_frames >= 0, got {num_frames!r}")
                if num_frames == 0:
                    continue
                text = self.stream_text(num_frames)
                spans.extend(self._stream_learn_spans(offset, num_frames, message.get("learn", False)))
            else:
                raise ValueError(f"message {i}: unknown role {role!r}; valid roles: system, user, assistant, stream")
            parts.append(text)
            offset += len(text)
        return "".join(parts), spans

    def _stream_learn_spans(self, offset: int, num_frames: int, learn: bool | int) -> list[tuple[int, int]]:
        """After each frame's last `<v>` the model learns what follows: the interval token (or, with no interval
        token, the next `<v>`, relabelled eos), and after the last frame `]` plus the newline that follows it."""
        if isinstance(learn, bool):
            num_learned = num_frames if learn else 0
        elif isinstance(learn, int) and learn >= 0:
            num_learned = min(learn, num_frames)
        else:
            raise ValueError(f"a stream message's learn must be a bool or an int >= 0, got {learn!r}")
        interval = self.config.frame_token_interval or ""
        step = len(self.frame_text) + len(interval)
        spans = []
        for k in range(num_learned):
            start = offset + len("\n[") + k * step + len(self.frame_text)
            if k < num_frames - 1:
                spans.append((start, start + (len(interval) or len(self.config.v_placeholder))))
            else:
                spans.append((start, start + len("]\n")))  # the `\n` may not exist at the end: offsets handle it
        return spans

    def tokenize(self, conversation: list[dict[str, Any]]) -> Tokenized:
        """Input ids and labels (IGNORE_INDEX where nothing is learned) of a conversation."""
        text, spans = self.render(conversation)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids: list[int] = encoding.input_ids
        starts = [start for start, _ in encoding.offset_mapping]
        labels = [IGNORE_INDEX] * len(input_ids)
        token_index = {}
        for index, start in enumerate(starts):
            token_index.setdefault(start, index)
        for span_start, span_stop in spans:
            first = token_index.get(span_start)
            if first is None:
                raise ValueError(
                    f"no token starts at character {span_start} ({text[span_start : span_start + 12]!r}): the "
                    "tokenizer merges a learned span with the text before it"
                )
            if first == 0:
                raise ValueError("a learned token cannot be the first token of a conversation")
            index = first
            while index < len(input_ids) and starts[index] < span_stop:
                labels[index - 1] = input_ids[index]
                index += 1
        # No interval token (v1): the label after a frame is the next frame's `<v>`, which means "stay silent": eos.
        labels = [self.ids.eos if label == self.ids.v_placeholder else label for label in labels]
        return Tokenized(text=text, input_ids=input_ids, labels=labels)
