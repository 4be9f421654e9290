"""`videollm-online data synthesize`: any timestamped annotation -> streaming dialogues written by an LLM (the seed's
method).

For each annotated video (or each step with sub-steps), the LLM reads the timestamped annotations and a dialogue
skeleton to complete: a few user questions at random times (about the past, the present, the next step, or "..." for
the LLM to invent one), each followed by assistant turns at every annotation boundary until the next question, as
lines like `12.5s User: ...` / `12.5s Assistant: ...`. Its answer is parsed back into timed turns; a dialogue whose
assistant text leaks times ("second", "12s": the annotation times it was shown), that is malformed, or whose span is
outside [min_span, max_span] seconds is dropped and counted by reason, never fatal.

Backends: any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama) through the `openai` client,
called concurrently, and a local Hugging Face causal LM. Runs resume: each dialogue has a stable id, finished ones
(kept or dropped) are listed in a log beside the output, and each kept dialogue is appended to the JSONL output as
one whole line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.errors import UserError

logger = logging.getLogger(__name__)

# Question templates the skeleton samples from, by what they ask about (the seed's past / current / next split).
PAST_QUESTIONS = (
    "What have I done so far?",
    "Can you sum up my progress?",
    "What did I just do?",
    "Which steps are finished?",
    "Did the last step go well?",
    "Did I make any mistakes so far?",
    "How did I get here?",
    "What was I doing a moment ago?",
    "Remind me what I did before this.",
    "Recap, please.",
    "Have I skipped anything?",
    "What did I use for the previous step?",
)
CURRENT_QUESTIONS = (
    "What am I doing right now?",
    "Which step is this?",
    "Am I doing this right?",
    "What is my goal here?",
    "How is this step going?",
    "What should I watch out for now?",
    "Can you explain what I am doing?",
    "Is this the right tool for it?",
    "Any tips for this step?",
    "Now?",
    "How far along am I?",
    "Does this look correct to you?",
)
NEXT_QUESTIONS = (
    "What should I do next?",
    "What is the next step?",
    "What comes after this?",
    "What do I need for the next step?",
    "How do I finish this?",
    "Anything to prepare before the next step?",
    "Next?",
    "How many steps are left?",
    "What should I be careful about next?",
    "Where do I go from here?",
    "Can you guide me through the next part?",
    "What is left to do?",
)
# "..." lets the LLM invent the user's words (small talk, off-topic questions), as the seed's casual queries do.
QUESTION_GROUPS = {"past": PAST_QUESTIONS, "current": CURRENT_QUESTIONS, "next": NEXT_QUESTIONS, "casual": ("...",)}

PROMPT_HEAD = (
    "Below is what happens in a first-person video, with times in seconds. A helpful assistant watches "
    "the video live with the user.\n\n"
)
PROMPT_TAIL = (
    "\nComplete the dialogue between the user and the assistant below: keep every line's time and "
    'speaker, and replace each "..." with what is said. The assistant speaks up by itself with clear, '
    "short, real-time help about what the user is doing and should do next. It does not know the "
    "times, so it never mentions them. When the user asks something off topic, it still helps. Answer "
    "with the dialogue lines only.\n"
)

_LINE = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)\s*s\s*\**\s*(User|Assistant)\s*:\s*\**\s*(.*?)\s*$")  # **bold** too
_ROLE = re.compile(r"\b(User|Assistant)\s*:")
_LEAK = re.compile(r"second|\b\d+(?:\.\d+)?s\b", re.IGNORECASE)


@dataclass
class SynthesisConfig:
    fps: float = 2.0
    """Turn times in the skeleton are annotation times snapped up to this frame rate."""
    dialogues_per_item: int = 2
    """Dialogues written per annotated item."""
    questions_per_dialogue: int = 3
    """User questions per dialogue."""
    min_span: float = 60.0
    """Drop dialogues shorter than this many seconds (first to last turn)."""
    max_span: float = 3600.0
    """Drop dialogues longer than this many seconds."""
    max_new_tokens: int = 2048
    """Longest reply of the LLM in tokens."""
    temperature: float = 0.0
    """Sampling temperature of the LLM (0: greedy)."""
    seed: int = 0
    """Seeds the skeletons and the sampling, so that a run is reproducible."""

    def __post_init__(self) -> None:
        from ..utils.checks import check_fps, check_number

        check_fps("fps", self.fps)
        check_number("temperature", self.temperature, low=0, high=10)
        check_number("min_span", self.min_span, low=0)
        check_number("max_span", self.max_span, low=0)
        if self.dialogues_per_item < 1 or self.questions_per_dialogue < 1:
            raise ValueError("dialogues_per_item and questions_per_dialogue must be >= 1")
        if not 0 <= self.min_span <= self.max_span:
            raise ValueError(f"need 0 <= min_span <= max_span, got {self.min_span} and {self.max_span}")
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError("max_new_tokens must be >= 1 and temperature >= 0")


@dataclass
class SynthesisItem:
    """One annotated span to write dialogues about: segments (start, end or None, text), times in video seconds."""

    id: str
    video: str
    segments: list[tuple[float, float | None, str]]
    goal: str | None = None
    duration: float | None = None


# ---------------------------------------------------------------------- sources
def goalstep_items(anno_root: str | Path, splits: Sequence[str] = ("train", "val")) -> list[SynthesisItem]:
    """Ego4D GoalStep (`goalstep_{split}.json`): one item per video with steps (goal + steps) and one per step with
    sub-steps (step + sub-steps), as the seed's generator does."""
    from .datasets.common import read_json

    items = []
    for split in splits:
        path = Path(anno_root) / f"goalstep_{split}.json"
        videos = read_json(path).get("videos") if path.exists() else None
        if not isinstance(videos, list):
            raise UserError(f"{path}: expected Ego4D GoalStep annotations {{'videos': [...]}} (goalstep_{split}.json)")
        for video in videos:
            uid, end = video["video_uid"], video.get("end_time")
            steps = video.get("segments") or []
            if steps:
                items.append(
                    SynthesisItem(
                        f"{uid}:goal",
                        uid,
                        [_segment(s) for s in steps],
                        video.get("goal_description", "").strip() or None,
                        end,
                    )
                )
            for k, step in enumerate(steps):
                if step.get("segments"):
                    items.append(
                        SynthesisItem(
                            f"{uid}:step{k}",
                            uid,
                            [_segment(s) for s in step["segments"]],
                            step["step_description"].strip(),
                            end,
                        )
                    )
    return items


def _segment(segment: dict[str, Any]) -> tuple[float, float | None, str]:
    return float(segment["start_time"]), float(segment["end_time"]), segment["step_description"].strip()


def generic_items(path: str | Path) -> list[SynthesisItem]:
    """A JSON list or JSONL of videos `{"video", "annotations": [{"time" | "start", "end", "text"}], "goal"?,
    "duration"?}`: any timestamped annotation."""
    from .datasets.common import read_json_or_jsonl

    path = Path(path)
    items = []
    for index, record in enumerate(read_json_or_jsonl(path)):
        try:
            segments = [
                (
                    float(a["time"] if "time" in a else a["start"]),
                    float(a["end"]) if "end" in a else None,
                    str(a["text"]).strip(),
                )
                for a in record["annotations"]
            ]
            video = str(record["video"])
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{path}: video {index} needs 'video' and 'annotations' [{{'time' or 'start'/'end', "
                f"'text'}}] ({error!r})"
            ) from error
        items.append(
            SynthesisItem(f"{video}:{index}", video, sorted(segments), record.get("goal"), record.get("duration"))
        )
    return items


# ---------------------------------------------------------------------- prompt and parsing
def snap_time(t: float, fps: float, duration: float | None) -> float:
    snapped = max(math.ceil(t * fps - 1e-6) / fps, 0.0)
    return round(min(snapped, duration) if duration is not None else snapped, 3)


def build_prompt(item: SynthesisItem, config: SynthesisConfig, rng: random.Random) -> str:
    """The prompt for one dialogue: the annotations, then a skeleton with questions at random times."""
    lines = [
        f"{start:.2f}s-{end:.2f}s: {text}" if end is not None else f"{start:.2f}s: {text}"
        for start, end, text in item.segments
    ]
    times = sorted(
        {
            snap_time(t, config.fps, item.duration)
            for start, end, _ in item.segments
            for t in ((start,) if end is None else (start, end))
        }
    )
    first, last = times[0], times[-1]
    user_times = sorted(round(rng.uniform(first, last), 1) for _ in range(config.questions_per_dialogue))
    skeleton = []
    for q, user_time in enumerate(user_times):
        question = rng.choice(QUESTION_GROUPS[rng.choice(sorted(QUESTION_GROUPS))])
        skeleton += [f"{user_time}s User: {question}", f"{user_time}s Assistant: ..."]
        following = user_times[q + 1] if q + 1 < len(user_times) else math.inf
        skeleton += [f"{t}s Assistant: ..." for t in times if user_time <= t < following]
    goal = f"\nThe user's goal: {item.goal}\n" if item.goal else ""
    return PROMPT_HEAD + "\n".join(lines) + "\n" + goal + PROMPT_TAIL + "\n" + "\n".join(skeleton)


class Malformed(ValueError):
    """Model output that is not a usable dialogue; the message is the reason counted in the report."""


def parse_dialogue(text: str) -> list[dict[str, Any]]:
    """Lines `12.5s User: ...` / `12.5s Assistant: ...` -> turns `{"role", "content", "time"}`; other lines
    (greetings, explanations) are ignored. Raises Malformed."""
    turns = []
    for line in text.splitlines():
        if not _ROLE.search(line):
            continue
        match = _LINE.match(line)
        if match is None:
            raise Malformed("malformed dialogue line")
        time_, role, content = match.groups()
        turns.append({"role": role.lower(), "content": content, "time": float(time_)})
    if not turns:
        raise Malformed("no dialogue lines")
    return turns


def check_dialogue(turns: list[dict[str, Any]], config: SynthesisConfig) -> None:
    """Raises Malformed when a dialogue must be dropped."""
    if turns[0]["role"] != "user":
        raise Malformed("does not open with the user")
    if any(b["time"] < a["time"] for a, b in zip(turns, turns[1:])):
        raise Malformed("times go backwards")
    assistant = [t["content"] for t in turns if t["role"] == "assistant"]
    if not assistant or any(not c.strip(". ") for c in assistant):
        raise Malformed("unfilled assistant turn")
    if any(_LEAK.search(c) for c in assistant):
        raise Malformed("assistant text leaks times")
    span = turns[-1]["time"] - turns[0]["time"]
    if span < config.min_span:
        raise Malformed(f"shorter than {config.min_span:g} s")
    if span > config.max_span:
        raise Malformed(f"longer than {config.max_span:g} s")


# ---------------------------------------------------------------------- backends
class BackendError(RuntimeError):
    """A request that failed after its retries (counted, and retried on the next run)."""


class OpenAIBackend:
    """Chat completions of an OpenAI-compatible server through the official `openai` client: its own retries
    (`max_retries`: 408, 409, 429, 5xx and connection errors, with exponential back-off and the server's
    Retry-After) and timeout."""

    concurrent = True
    NO_KEY = "EMPTY"
    """The key sent to a server that needs none (the client requires one; vLLM's examples use this word)."""

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 600.0, retries: int = 3
    ):
        from openai import OpenAI

        if retries < 0:
            raise UserError(f"--retries must be >= 0, got {retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.client = OpenAI(base_url=base_url, api_key=api_key or self.NO_KEY, timeout=timeout, max_retries=retries)

    def __call__(self, prompt: str, config: SynthesisConfig, seed: int) -> str:
        import openai

        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=config.max_new_tokens,
                temperature=config.temperature,
                seed=seed,
            )
        except openai.APIStatusError as error:
            detail = error.response.text[:300]
            if 400 <= error.status_code < 500 and error.status_code not in (408, 409, 429):  # our request is wrong
                raise UserError(
                    f"{self.url} refused the request (HTTP {error.status_code}): {detail} -- check "
                    "--llm-name and --api-key"
                ) from error
            raise BackendError(f"HTTP {error.status_code}: {detail}") from error
        except openai.APIConnectionError as error:  # timeouts included
            if _refused(error):
                raise UserError(
                    f"cannot reach {self.url}: connection refused (start the server, or fix --base-url)"
                ) from error
            raise BackendError(f"{type(error).__name__}: {error}") from error
        except openai.APIError as error:  # e.g. a body that is not a chat completion
            raise BackendError(f"{type(error).__name__}: {error}") from error
        if not reply.choices:
            raise BackendError("the reply has no choices")
        return reply.choices[0].message.content or ""


def _refused(error: BaseException) -> bool:
    """Whether a connection error comes from a refused connection (nothing listens there)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError):
            return True
        error = error.__cause__ or error.__context__
    return False


class HFBackend:
    """A local Hugging Face causal LM (a directory, a hub id in the local cache, a .gguf file or
    `package:PKG/FILE.gguf`), prompted through its chat template when it has one."""

    concurrent = False

    def __init__(self, model: str, *, device: str = "cpu", dtype: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..core.checkpoint import gguf_to_safetensors, parse_dtype, resolve_source

        path = resolve_source(model, "synthesis LLM")
        if path.suffix == ".gguf":
            path = gguf_to_safetensors(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=parse_dtype(dtype)).to(device).eval()
        self.device = device

    def __call__(self, prompt: str, config: SynthesisConfig, seed: int) -> str:
        import torch

        messages = [{"role": "user", "content": prompt}]
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        else:
            ids = self.tokenizer(prompt + "\n", return_tensors="pt").input_ids
        ids = ids.to(self.device)
        sample = config.temperature > 0
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=sample,
                temperature=config.temperature if sample else None,
                top_p=None,
                top_k=None,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


Backend = Callable[[str, SynthesisConfig, int], str]


# ---------------------------------------------------------------------- the run
@dataclass
class SynthesisReport:
    written: int = 0
    already_done: int = 0
    skipped: Counter = field(default_factory=Counter)
    backend_errors: int = 0

    def lines(self) -> list[str]:
        lines = [
            f"{self.written} dialogues written, {self.already_done} already done, "
            f"{sum(self.skipped.values())} dropped, {self.backend_errors} failed requests (retried next run)"
        ]
        lines += [f"dropped {count}: {reason}" for reason, count in sorted(self.skipped.items())]
        return lines


def log_path(out: Path) -> Path:
    return out.with_name(out.name + ".log")


def _finished_ids(out: Path) -> set[str]:
    """Ids in the output and the log; a line cut short by a crash is removed first."""
    done = set()
    for path in (out, log_path(out)):
        if not path.exists():
            continue
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as file:  # a crash mid-append: drop the partial line
                file.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        for line in data.decode().splitlines():
            if line.strip():
                done.add(json.loads(line)["id"])
    return done


def _append(path: Path, record: dict[str, Any]) -> None:
    """One record as one line with one write: a crash leaves whole lines (and at most a cut last one)."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def synthesize(
    items: Iterable[SynthesisItem],
    backend: Backend,
    out: str | Path,
    config: SynthesisConfig,
    *,
    concurrency: int = 1,
    progress: bool = True,
    retry_dropped: bool = False,
) -> SynthesisReport:
    """Write dialogues for every item to `out` (JSONL of `{"id", "video_uid", "conversation"}`), resuming a run
    that stopped. `retry_dropped` asks again for dialogues that an earlier run dropped."""
    from tqdm import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _finished_ids(out)
    if retry_dropped and log_path(out).exists():
        kept = (
            {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
        )
        done = kept
    report = SynthesisReport()
    jobs = []
    for item in items:
        for n in range(config.dialogues_per_item):
            dialogue_id = f"{item.id}#{n}"
            if dialogue_id in done:
                report.already_done += 1
            else:
                jobs.append((dialogue_id, item))

    def run(job: tuple[str, SynthesisItem]) -> tuple[str, SynthesisItem, str]:
        dialogue_id, item = job
        rng = random.Random(f"{config.seed}:{dialogue_id}")
        prompt = build_prompt(item, config, rng)
        return dialogue_id, item, backend(prompt, config, rng.randrange(2**31))

    def outcomes():
        """(job's result or its BackendError), as they finish; a local model runs here, in this thread."""
        if not getattr(backend, "concurrent", False) or concurrency <= 1:
            for job in jobs:
                try:
                    yield run(job)
                except BackendError as error:
                    yield error
            return
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    try:
                        yield future.result()
                    except BackendError as error:
                        yield error
            finally:  # an error or an interrupt: do not start what is still queued
                for future in futures:
                    future.cancel()

    bar = tqdm(total=len(jobs), unit="dialogue", desc="synthesize", disable=not progress, dynamic_ncols=True)
    try:
        for outcome in outcomes():
            bar.update(1)
            if isinstance(outcome, BackendError):
                report.backend_errors += 1
                logger.warning("request failed: %s", outcome)
                continue
            dialogue_id, item, text = outcome
            try:  # only this thread writes, so records never interleave
                turns = parse_dialogue(text)
                check_dialogue(turns, config)
            except Malformed as reason:
                report.skipped[str(reason)] += 1
                _append(log_path(out), {"id": dialogue_id, "status": "dropped", "reason": str(reason)})
            else:
                _append(out, {"id": dialogue_id, "video_uid": item.video, "conversation": turns})
                _append(log_path(out), {"id": dialogue_id, "status": "written"})
                report.written += 1
            bar.set_postfix(
                written=report.written,
                dropped=sum(report.skipped.values()),
                failed=report.backend_errors,
                refresh=False,
            )
    finally:
        bar.close()
    return report
