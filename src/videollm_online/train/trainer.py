"""Training on the Hugging Face `Trainer`: LoRA on the LLM, a trainable connector, the vision encoder frozen or not.

The same code trains the tiny test model on a CPU and an 8B model on many GPUs (`torchrun` / `accelerate launch`:
the Trainer runs DDP or FSDP). Intermediate checkpoints hold only the trainable weights plus the Trainer's optimizer,
scheduler and RNG state, so resuming after a kill continues exactly; the final model is a project checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
from transformers.training_args import ParallelMode

from ..core.checkpoint import RELEASED_LORA_TARGETS, add_lora, build_model, load_checkpoint, save_checkpoint
from ..core.config import PRESETS, LiveConfig
from ..data.frames import FrameStore
from ..utils.errors import UserError
from ..utils.files import read_jsonl, write_json_atomic
from .dataset import StreamCollator, StreamDataset, check_train_inputs

logger = logging.getLogger(__name__)
TRAINABLE_FILE = "trainable.safetensors"
FINAL_DIR = "final"


@dataclass
class TrainConfig:
    """What to train on, what to train, and how."""

    data: str
    """JSONL of samples: {"video", "conversation", "start_frame"}."""
    frames: str
    """Directory of per-video safetensors: `frames` (uint8 pixels) or `features` (see `features`)."""
    output_dir: str
    """Checkpoints go to output_dir/checkpoint-STEP, the final model to output_dir/final."""
    model: str = "demo"
    """A preset name (fresh connector) or a checkpoint to continue from."""
    eval_data: str | None = None
    """JSONL of held-out samples; evaluated every `eval_steps`."""
    eval_frames: str | None = None
    """Frames directory of the held-out samples (default: `frames`)."""
    features: bool = False
    """Read precomputed features (key `features`) instead of pixels; the vision encoder is then frozen."""
    lora_r: int = 16
    """LoRA rank (0: no LoRA)."""
    lora_alpha: int = 32
    """LoRA scale alpha."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA inputs, in [0, 1]."""
    lora_targets: str = RELEASED_LORA_TARGETS
    """Regex (or comma-separated names) of LLM modules that get LoRA; empty: no LoRA, the LLM stays frozen."""
    train_vision: bool = False
    """Train the vision encoder too (pixels only)."""
    stream_loss_weight: float | None = None
    """Overrides the model config's weight of the frame-position loss."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    vision_learning_rate: float | None = None
    """Learning rate of the vision encoder (default: learning_rate)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.05
    """Share of the steps over which the learning rate warms up."""
    num_epochs: float = 1.0
    """Passes over the data."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1: the epochs decide."""
    batch_size: int = 4
    """Conversations per step on each GPU."""
    grad_accum: int = 1
    """Steps whose gradients add up before an update."""
    max_length: int | None = None
    """Cut conversations to this many tokens (None: no cut)."""
    bf16: bool = False
    """bfloat16 autocast (GPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, a bit slower."""
    logging_steps: int = 10
    """Steps between log lines."""
    save_steps: int = 200
    """Steps between checkpoints."""
    save_total_limit: int = 2
    """Checkpoints kept in output_dir; older ones are deleted."""
    eval_steps: int = 200
    """Steps between evaluations on `eval_data`."""
    stream_eval_samples: int = 64
    """Held-out conversations scored with the streaming metrics (LM-PPL, TimeDiff, Fluency, LM-Correctness) at each
    evaluation, besides the loss; 0: the loss only."""
    seed: int = 42
    """Random seed."""
    dataloader_workers: int = 0
    """Processes loading data (0: in the training process)."""
    report_to: str | None = None
    """Where the Trainer logs losses and metrics: "tensorboard" (event files in output_dir/runs/), "wandb" or "none".
    None: TensorBoard when it is installed, else none."""
    max_time_minutes: float | None = None
    """A wall-clock budget: the learning-rate schedule spans it (or max_steps, whichever ends first) and training
    stops, saving, when it is spent. A resumed run goes on with what its checkpoint had left of it."""
    save_dtype: str | None = None
    """Store the final checkpoint's weights in this dtype (e.g. float16 to ship it small)."""

    def __post_init__(self) -> None:
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_r must be >= 0 and lora_alpha > 0")
        if self.features and self.train_vision:
            raise ValueError("train_vision needs pixels: precomputed features fix the encoder")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.stream_eval_samples < 0:
            raise ValueError(f"stream_eval_samples must be >= 0, got {self.stream_eval_samples}")
        if self.report_to is not None and self.report_to not in REPORT_TARGETS:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TARGETS)}, got {self.report_to!r}")
        check_train_numbers(self)


def check_train_numbers(config: TrainConfig) -> None:
    """Every float of a training config finite and in range (NaN was saved into the configs and trained with)."""
    from ..utils.checks import check_number

    check_number("learning_rate", config.learning_rate, low=0, low_open=True, high=10)
    check_number("vision_learning_rate", config.vision_learning_rate, low=0, low_open=True, high=10, optional=True)
    check_number("lora_dropout", config.lora_dropout, low=0, high=1)
    check_number("stream_loss_weight", config.stream_loss_weight, low=0, optional=True)
    check_number("weight_decay", config.weight_decay, low=0)
    check_number("warmup_ratio", config.warmup_ratio, low=0, high=1)
    check_number("num_epochs", config.num_epochs, low=0, low_open=True)
    check_number("max_time_minutes", config.max_time_minutes, low=0, low_open=True, optional=True)


REPORT_TARGETS = ("tensorboard", "wandb", "none")


def report_targets(report_to: str | None) -> list[str]:
    """The Trainer's `report_to` list for `TrainConfig.report_to`; a target whose package is missing is one clear
    error (for None, TensorBoard is taken only when it is there)."""
    import importlib.util

    installed = {
        "tensorboard": importlib.util.find_spec("tensorboard") is not None
        or importlib.util.find_spec("tensorboardX") is not None,
        "wandb": importlib.util.find_spec("wandb") is not None,
    }
    if report_to is None:
        return ["tensorboard"] if installed["tensorboard"] else []
    if report_to == "none":
        return []
    if not installed[report_to]:
        hint = " and run `wandb login`" if report_to == "wandb" else ""
        raise UserError(
            f"--report-to {report_to} needs the {report_to} package: `pip install {report_to}`{hint}, "
            "or pass --report-to none"
        )
    return [report_to]


def build_training_model(config: TrainConfig):
    """The model with its trainable parts switched on: connector always, LoRA if asked, vision if asked."""
    if config.model in PRESETS and not Path(config.model).exists():
        overrides = {}
        if config.stream_loss_weight is not None:
            overrides["stream_loss_weight"] = config.stream_loss_weight
        model, template = build_model(LiveConfig.from_name(config.model, **overrides))
    else:
        model, template = load_checkpoint(config.model, is_trainable=True)
        if config.stream_loss_weight is not None:
            model.config.stream_loss_weight = config.stream_loss_weight
    if config.lora_r > 0 and config.lora_targets and not hasattr(model.llm, "peft_config"):
        is_regex = any(c in config.lora_targets for c in "|*$")
        targets = config.lora_targets if is_regex else [t.strip() for t in config.lora_targets.split(",")]
        add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout, target_modules=targets)
    if not hasattr(model.llm, "peft_config"):  # PEFT already froze the base and opened LoRA + the connector
        model.base_llm.requires_grad_(False)
        model.connector.requires_grad_(True)
    model.frame_encoder.requires_grad_(config.train_vision)
    model.train()
    return model, template


STREAM_METRICS = ("lm_ppl", "time_diff", "fluency", "lm_correctness")


def streaming_metrics(
    model, dataset: StreamDataset, limit: int, rank: int = 0, world_size: int = 1
) -> dict[str, float]:
    """The paper's streaming metrics over the first `limit` conversations of a dataset, at the model's fps and
    threshold; each rank scores its share (`shard`) and every rank gets the aggregate."""
    from ..eval.benchmarks import frame_embeds
    from ..eval.metrics import aggregate, evaluate_conversation
    from ..utils.distributed import gather, shard
    from .dataset import conversation_frames

    was_training = model.training
    model.eval()
    results = []
    with torch.inference_mode():
        for row in shard(dataset.rows[:limit], rank, world_size):
            start = int(row.get("start_frame", 0))
            frames = dataset.store.load(row["video"], start, start + conversation_frames(row["conversation"]))
            results.append(
                evaluate_conversation(
                    model,
                    dataset.template,
                    row["conversation"],
                    frame_embeds(model, frames),
                    fps=model.config.frame_fps,
                    threshold=model.config.frame_token_interval_threshold,
                )
            )
    model.train(was_training)
    summary = aggregate(gather(results, world_size)).to_dict()
    return {name: float(summary[name]) for name in STREAM_METRICS}


def enable_gradient_checkpointing(model) -> None:
    """Recompute the LLM's activations in the backward pass: less memory, so more conversations a step."""
    model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


class LiveTrainer(Trainer):
    """Saves and restores only the trainable weights (LoRA, connector, vision if trained); evaluates the streaming
    metrics besides the loss."""

    vision_learning_rate: float | None = None
    time_budget: TimeBudget | None = None
    stream_eval_samples: int = 0

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if not self.stream_eval_samples or not isinstance(dataset, StreamDataset):
            return metrics
        if self.is_fsdp_enabled:  # sharded weights: every rank would have to run the same forwards
            logger.warning("streaming metrics during training are skipped under FSDP; run `videollm-online eval`")
            self.stream_eval_samples = 0
            return metrics
        bf16 = self.args.bf16 and self.model.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            stream = streaming_metrics(
                self.model, dataset, self.stream_eval_samples, self.args.process_index, self.args.world_size
            )
        stream = {f"{metric_key_prefix}_{name}": round(value, 4) for name, value in stream.items()}
        self.log(stream)
        return {**metrics, **stream}

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.time_budget is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.time_budget.max_steps = num_training_steps
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.time_budget.factor)
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = Path(output_dir or self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_file(trainable_state(self.model), output_dir / TRAINABLE_FILE)
        self.model.config.save(output_dir)
        if self.time_budget is not None:
            # Written before the Trainer's state, which is what marks a checkpoint as complete for a resume.
            self.time_budget.save(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model or self.model
        state = load_file(Path(resume_from_checkpoint) / TRAINABLE_FILE)
        expected = trainable_state(model)
        missing = sorted(set(expected) - set(state))
        if missing:
            raise UserError(
                f"{resume_from_checkpoint} lacks trainable weights, e.g. {missing[0]}: was it "
                "written by a different training setup?"
            )
        with torch.no_grad():
            parameters = dict(model.named_parameters())
            for name, value in state.items():
                parameters[name].copy_(value)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best:
            self._load_from_checkpoint(best)

    def create_optimizer(self):
        if self.optimizer is None and self.vision_learning_rate is not None:
            vision = {id(p) for p in self.model.frame_encoder.parameters()}
            params = [p for p in self.model.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in params if id(p) not in vision], "lr": self.args.learning_rate},
                {"params": [p for p in params if id(p) in vision], "lr": self.vision_learning_rate},
            ]
            optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
            kwargs.pop("lr", None)
            self.optimizer = optimizer_cls([g for g in groups if g["params"]], **kwargs)
            return self.optimizer
        return super().create_optimizer()


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train; returns the directory of the final checkpoint."""
    check_train_inputs(config)  # before any weights load
    report_to = report_targets(config.report_to)  # a missing package stops the run before any work
    torch.manual_seed(config.seed)
    model, template = build_training_model(config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    key = "features" if config.features else "frames"
    store = FrameStore(config.frames, key)
    train_set = StreamDataset(read_jsonl(config.data), store, template, config.max_length)
    eval_set = None
    if config.eval_data:
        eval_store = FrameStore(config.eval_frames, key) if config.eval_frames else store
        eval_set = StreamDataset(read_jsonl(config.eval_data), eval_store, template, config.max_length)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "train_config.json", dataclasses.asdict(config))

    if config.bf16 and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise UserError("--bf16 needs a GPU with bfloat16 support; leave it out on a CPU")
    args = training_arguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup=config.warmup_ratio,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="cosine",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if eval_set is not None else "no",
        eval_steps=config.eval_steps,
        bf16=config.bf16,
        seed=config.seed,
        dataloader_num_workers=config.dataloader_workers,
        remove_unused_columns=False,
        report_to=report_to,
        ddp_find_unused_parameters=False,
        # On a machine without CUDA, accelerate sets up data parallelism (gloo) only when told it runs on the CPU;
        # otherwise every torchrun process trained alone, with no gradient exchange.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available() else None,
        disable_tqdm=False,
    )
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise RuntimeError(
            f"{world_size} processes were started, but the Trainer is not data parallel "
            f"({args.parallel_mode}): each would train alone"
        )
    trainer = LiveTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, data_collator=StreamCollator(template)
    )
    trainer.vision_learning_rate = config.vision_learning_rate if config.train_vision else None
    trainer.stream_eval_samples = config.stream_eval_samples
    last = get_last_checkpoint(str(output_dir)) if resume else None
    if resume and last is None:
        logger.warning("no checkpoint in %s to resume from: starting fresh", output_dir)
    if config.max_time_minutes is not None:
        trainer.time_budget = TimeBudget(
            config.max_time_minutes * 60,
            config.warmup_ratio,
            config.max_steps,
            spent_before=TimeBudget.spent_in(last) if last else 0.0,
        )
        trainer.add_callback(trainer.time_budget)
    trainer.train(resume_from_checkpoint=last)
    final = output_dir / FINAL_DIR
    if trainer.is_world_process_zero():
        model.config.extra["train"] = {k: v for k, v in dataclasses.asdict(config).items() if k != "report_to"}
        save_checkpoint(model, template, final, save_vision=config.train_vision or None, dtype=config.save_dtype)
        write_log_history(trainer, output_dir)
    if trainer.time_budget is not None and trainer.time_budget.deferred_evaluation:
        trainer.evaluate()  # every rank: the streaming metrics are gathered
        if trainer.is_world_process_zero():
            write_log_history(trainer, output_dir)
    return final


def write_log_history(trainer: Trainer, output_dir: Path) -> None:
    write_json_atomic(output_dir / "log_history.json", trainer.state.log_history, indent=1)


def training_arguments(warmup: float, **kwargs) -> TrainingArguments:
    """TrainingArguments across transformers 5.x: the warmup ratio moved from `warmup_ratio` to a float
    `warmup_steps`."""
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs["warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"] = warmup
    return TrainingArguments(**kwargs)


class TimeBudget(TrainerCallback):
    """Warmup then cosine decay over whichever runs out first, the steps or the wall-clock budget; stops (with a
    save) when the budget is spent. The rate follows max(step fraction, time fraction), so a run cut by time still
    ends with a decayed rate. `LiveTrainer.create_scheduler` turns `factor` into the learning-rate scheduler.

    The clock starts with the first step (`begin`), once the first batch is there: data workers starting and the
    first reads of a large world can take a minute, which would otherwise pass at the peak rate, or its warmup,
    with no step taken (a 2-minute vision stage once spent 87 s of its budget on its first 100 steps).

    Every checkpoint records the time spent (`BUDGET_FILE`), and a resumed run starts from it (`spent_before`): the
    rate goes on down the same curve, and the run stops when the whole budget is spent, not a new one."""

    BUDGET_FILE = "time_budget.json"

    def __init__(self, seconds: float, warmup: float, max_steps: int, spent_before: float = 0.0):
        self.seconds, self.warmup, self.max_steps = seconds, warmup, max_steps
        self.spent_before = spent_before  # seconds trained before the checkpoint a resumed run starts from
        self.started: float | None = None  # set by the first step
        self.deferred_evaluation = False  # an evaluation was due at the step the budget ran out

    def begin(self) -> None:
        """Start the clock, once: the first step's batch has arrived."""
        if self.started is None:
            self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.spent_before + (0.0 if self.started is None else time.monotonic() - self.started)

    def save(self, checkpoint: Path) -> None:
        write_json_atomic(checkpoint / self.BUDGET_FILE, {"spent_s": round(self.elapsed(), 3)})

    @classmethod
    def spent_in(cls, checkpoint: str | Path) -> float:
        """Seconds of the budget spent when `checkpoint` was saved; 0 (with a warning) if it did not record them."""
        path = Path(checkpoint) / cls.BUDGET_FILE
        try:
            return float(json.loads(path.read_text())["spent_s"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning(
                "%s does not say how much of the time budget was spent: the resumed run gets a whole budget", checkpoint
            )
            return 0.0

    def spent(self) -> bool:
        return self.elapsed() > self.seconds

    def factor(self, step: int) -> float:
        by_time = self.elapsed() / self.seconds
        by_steps = step / self.max_steps if self.max_steps > 0 else 0.0
        p = min(1.0, max(by_time, by_steps))
        if p < self.warmup:
            return p / self.warmup
        return 0.5 * (1 + math.cos(math.pi * (p - self.warmup) / (1 - self.warmup)))

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = None  # the clock runs again from the first step; spent_before carries a resumed run's past

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin()

    def on_step_end(self, args, state, control, **kwargs):
        if self.spent():
            control.should_training_stop = True
            control.should_save = True
            # The Trainer evaluates before it saves, and the streaming metrics take minutes on a large held-out set:
            # a run killed then (a job's time limit, just as the budget ran out) lost all of it. `train` runs the
            # evaluation due now after the final checkpoint is written.
            self.deferred_evaluation = control.should_evaluate
            control.should_evaluate = False
        return control
