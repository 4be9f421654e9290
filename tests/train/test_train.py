"""Training end to end on a tiny synthetic world: loss goes down, a killed run resumes exactly, features and
torchrun (2 gloo processes) work."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import tiny_model
from videollm_online.apps.cli import main
from videollm_online.core.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three short synthetic videos at 2 fps, preprocessed to the tiny model's 32 px frames."""
    root = tmp_path_factory.mktemp("world")
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(root),
                "--videos",
                "3",
                "--seed",
                "7",
                "--size",
                "64",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "8",
                "--max-duration",
                "10",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "preprocess",
                str(root / "videos"),
                "--out",
                str(root / "frames"),
                "--fps",
                "2",
                "--resolution",
                "32",
                "-q",
            ]
        )
        == 0
    )
    return root


def train_args(world: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(world / "conversations.jsonl"),
        "--frames",
        str(world / "frames"),
        "--output-dir",
        str(out),
        "--model",
        "tiny",
        "--batch-size",
        "2",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--logging-steps",
        "1",
        "--seed",
        "3",
        *extra,
    ]


def losses(out: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((out / "log_history.json").read_text()) if "loss" in entry]


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(world, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            train_args(
                world,
                out,
                "--max-steps",
                "16",
                "--learning-rate",
                "5e-3",
                "--train-vision",
                "--save-steps",
                "100",
                "--save-dtype",
                "float16",
            )
        )
        == 0
    )
    history = losses(out)
    assert sum(history[-4:]) / 4 < sum(history[:4]) / 4 * 0.9, history
    model, template = load_checkpoint(out / "final")
    files = {p.name for p in (out / "final").iterdir()}
    assert {"adapter_model.safetensors", "vision", "llm", "videollm_online.json"} <= files
    adapter = load_file(out / "final" / "adapter_model.safetensors")
    assert all(t.dtype == torch.float16 for t in adapter.values())
    assert next(model.parameters()).dtype == torch.float32  # cast back on load
    assert model.config.extra["train"]["max_steps"] == 16


def test_report_to_tensorboard_writes_event_files(world, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(train_args(world, out, "--max-steps", "3", "--save-steps", "100", "--report-to", "tensorboard")) == 0
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train/loss")] == [1, 2, 3]
    assert "train/learning_rate" in accumulator.Tags()["scalars"]

    assert main(train_args(world, tmp_path / "quiet", "--max-steps", "1", "--report-to", "none")) == 0
    assert not (tmp_path / "quiet" / "runs").exists()
    if importlib.util.find_spec("wandb") is None:
        capsys.readouterr()
        assert main(train_args(world, tmp_path / "w", "--max-steps", "1", "--report-to", "wandb")) == 2
        err = capsys.readouterr().err
        assert "--report-to wandb needs the wandb package: `pip install wandb`" in err and "Traceback" not in err
        assert not (tmp_path / "w").exists()  # refused before any work


def test_a_killed_run_resumes_to_the_same_weights(world, tmp_path):
    steps = ["--max-steps", "8", "--save-steps", "2", "--learning-rate", "1e-3"]
    uninterrupted = tmp_path / "whole"
    assert main(train_args(world, uninterrupted, *steps)) == 0

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "videollm_online.apps.cli", *train_args(world, killed, *steps)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint-4" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoint-8").exists() and not (killed / "final").exists()

    assert main([*train_args(world, killed, *steps), "--resume"]) == 0
    expected = load_file(uninterrupted / "checkpoint-8" / "trainable.safetensors")
    resumed = load_file(killed / "checkpoint-8" / "trainable.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], msg=key)


def test_training_from_precomputed_features(world, tmp_path):
    model, template = tiny_model()
    checkpoint = tmp_path / "start"
    save_checkpoint(model, template, checkpoint)
    assert (
        main(
            [
                "data",
                "features",
                str(world / "frames"),
                "--out",
                str(tmp_path / "features"),
                "--model",
                str(checkpoint),
                "-q",
            ]
        )
        == 0
    )
    features = load_file(next((tmp_path / "features").glob("*.safetensors")))["features"]
    assert features.shape[1:] == (10, 32)
    out = tmp_path / "run"
    args = train_args(world, out, "--max-steps", "2", "--save-steps", "100")
    args[args.index("--frames") + 1] = str(tmp_path / "features")
    args[args.index("--model") + 1] = str(checkpoint)
    assert main([*args, "--features"]) == 0
    assert (out / "final" / "adapter_model.safetensors").exists()


def test_torchrun_with_two_gloo_processes(world, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "videollm_online.apps.cli",
        *train_args(
            world,
            out,
            "--max-steps",
            "3",
            "--save-steps",
            "100",
            "--eval-data",
            str(world / "conversations.jsonl"),
            "--eval-steps",
            "3",
        ),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]  # the trainer refuses to run processes that train alone
    state = json.loads((out / "log_history.json").read_text())
    assert state[-1]["step"] == 3
    # Two processes of 2 samples are one batch of 4: the same first loss as one process (the mean of the two ranks'
    # means against one mean over all positions, so not to the last digit). The Trainer used to log it times 2.
    assert main(train_args(world, tmp_path / "one", "--max-steps", "1", "--batch-size", "4")) == 0
    assert losses(out)[0] == pytest.approx(losses(tmp_path / "one")[0], rel=1e-3)
    assert (out / "final" / "adapter_model.safetensors").exists()
    # each rank scored half the held-out conversations; the gathered metrics are those of the whole set
    streamed = next(e for e in state if "eval_lm_ppl" in e)
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out / "final"), "--data-root", str(world), "-q", "-o", str(report)]) == 0
    assert streamed["eval_lm_ppl"] == pytest.approx(json.loads(report.read_text())["lm_ppl"], rel=1e-3)


def test_samples_with_missing_or_short_frames_are_dropped_with_a_warning(world):
    from videollm_online.data.frames import FrameStore
    from videollm_online.train.dataset import StreamDataset
    from videollm_online.utils.files import read_jsonl

    _, template = tiny_model()
    rows = read_jsonl(world / "conversations.jsonl")
    short = {**rows[0], "start_frame": 5}  # runs past the video's last frame
    missing = {**rows[0], "video": "no-such-video"}
    with pytest.warns(UserWarning, match=r"dropped 2 of \d+ samples .*no-such-video \(needs \d+, has 0\)"):
        dataset = StreamDataset([*rows, short, missing], FrameStore(world / "frames"), template)
    assert len(dataset) == len(rows)
    sample = dataset[0]
    assert sample["frames"].shape[0] * 10 == sample["input_ids"].count(template.ids.v_placeholder)


def test_gradient_accumulation_logs_the_loss_of_the_whole_batch(world, tmp_path):
    """Two accumulated batches of 2 are a batch of 4: the same logged loss (the Trainer used to sum the two)."""
    assert main(train_args(world, tmp_path / "four", "--max-steps", "1", "--batch-size", "4")) == 0
    assert main(train_args(world, tmp_path / "two", "--max-steps", "1", "--batch-size", "2", "--grad-accum", "2")) == 0
    assert losses(tmp_path / "two")[0] == pytest.approx(losses(tmp_path / "four")[0], rel=1e-3)


def test_gradient_checkpointing_gives_the_same_losses(world, tmp_path):
    """Checkpointing recomputes activations in the backward pass; the training it does must not change."""
    steps = ["--max-steps", "3", "--learning-rate", "5e-3", "--lora-dropout", "0", "--train-vision"]
    assert main(train_args(world, tmp_path / "plain", *steps)) == 0
    assert main(train_args(world, tmp_path / "ckpt", *steps, "--gradient-checkpointing")) == 0
    plain, ckpt = losses(tmp_path / "plain"), losses(tmp_path / "ckpt")
    assert len(plain) == 3 and plain[0] != plain[-1]
    assert ckpt == pytest.approx(plain, rel=1e-4)
    assert json.loads((tmp_path / "ckpt" / "train_config.json").read_text())["gradient_checkpointing"] is True
    from videollm_online.train.trainer import TrainConfig, build_training_model, enable_gradient_checkpointing

    model, _ = build_training_model(TrainConfig(data="", frames="", output_dir="", model="tiny", lora_r=4))
    enable_gradient_checkpointing(model)
    assert model.base_llm.is_gradient_checkpointing


def test_evaluation_during_training_reports_the_streaming_metrics(world, tmp_path):
    """The last evaluation scores the final weights: it must agree with `videollm-online eval` on the same world."""
    out = tmp_path / "run"
    assert (
        main(
            train_args(
                world,
                out,
                "--max-steps",
                "4",
                "--learning-rate",
                "5e-3",
                "--eval-data",
                str(world / "conversations.jsonl"),
                "--eval-steps",
                "2",
                "--save-steps",
                "100",
            )
        )
        == 0
    )
    evals = [e for e in json.loads((out / "log_history.json").read_text()) if "eval_lm_ppl" in e]
    assert [e["step"] for e in evals] == [2, 4]
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out / "final"), "--data-root", str(world), "-q", "-o", str(report)]) == 0
    expected = json.loads(report.read_text())
    for name in ("lm_ppl", "time_diff", "fluency", "lm_correctness"):
        assert evals[-1][f"eval_{name}"] == pytest.approx(expected[name], rel=1e-3, abs=1e-3), name
    assert main(train_args(world, tmp_path / "bad", "--stream-eval-samples", "-1")) == 2


def test_time_budget_counts_from_the_first_step(monkeypatch):
    """Worker start-up before the first batch is not training time: the rate and the stop count from `begin`."""
    from videollm_online.train import trainer

    clock = [1000.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    budget = trainer.TimeBudget(seconds=100, warmup=0.1, max_steps=0)
    clock[0] += 60  # a minute of workers starting: no decay, not spent
    assert budget.factor(0) == 0.0 and not budget.spent()
    budget.begin()
    clock[0] += 10  # 10 % of the budget: the end of the warmup, the peak rate
    assert budget.factor(1) == pytest.approx(1.0)
    budget.begin()  # later steps do not restart the clock
    clock[0] += 45  # 55 % in: half-way down the cosine after the warmup
    assert budget.factor(2) == pytest.approx(0.5)
    assert not budget.spent()
    clock[0] += 46
    assert budget.spent() and budget.factor(3) == 0.0
    budget.on_train_begin(None, None, None)  # a new run's clock starts at its first step (a resume: spent_before)
    assert not budget.spent()


def test_a_resumed_budget_goes_on_down_the_same_curve(monkeypatch, tmp_path, caplog):
    """The time spent before a checkpoint is saved with it: the resumed run's rate and stop go on from there."""
    from videollm_online.train import trainer

    clock = [0.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    first = trainer.TimeBudget(seconds=100, warmup=0.1, max_steps=0)
    first.begin()
    clock[0] += 40
    first.save(tmp_path)
    rate_at_40 = first.factor(0)
    assert rate_at_40 == pytest.approx(0.5 * (1 + math.cos(math.pi * (0.4 - 0.1) / 0.9)))

    resumed = trainer.TimeBudget(
        seconds=100, warmup=0.1, max_steps=0, spent_before=trainer.TimeBudget.spent_in(tmp_path)
    )
    clock[0] += 500  # the kill, the restart and the resumed run's data workers: not budget time
    resumed.on_train_begin(None, None, None)
    assert resumed.factor(0) == pytest.approx(rate_at_40)  # no second warmup
    resumed.begin()
    clock[0] += 59
    assert not resumed.spent()
    clock[0] += 2
    assert resumed.spent()

    with caplog.at_level("WARNING"):
        assert trainer.TimeBudget.spent_in(tmp_path / "elsewhere") == 0.0
    assert "does not say how much of the time budget was spent" in caplog.text


def test_a_resumed_run_stops_when_the_recorded_budget_is_spent(world, tmp_path):
    """Every checkpoint says how much of --max-time-minutes it used; a resume reads it, not a fresh budget."""
    out = tmp_path / "run"
    budget = ["--max-time-minutes", "10", "--save-steps", "2", "--learning-rate", "1e-3"]
    assert main(train_args(world, out, *budget, "--max-steps", "4")) == 0
    spent = [json.loads((out / f"checkpoint-{n}" / "time_budget.json").read_text())["spent_s"] for n in (2, 4)]
    assert 0 < spent[0] < spent[1] < 600
    # As if the run had been killed at step 4 with all of its 10 minutes spent:
    (out / "checkpoint-4" / "time_budget.json").write_text(json.dumps({"spent_s": 600.0}))
    assert main([*train_args(world, out, *budget, "--max-steps", "8"), "--resume"]) == 0
    history = json.loads((out / "log_history.json").read_text())
    assert max(entry.get("step", 0) for entry in history) == 5  # one step, then the budget stops it (not step 8)
    assert (out / "final" / "videollm_online.json").exists()


def test_the_evaluation_due_when_the_budget_runs_out_comes_after_the_final_save(world, tmp_path, monkeypatch):
    """A job killed during the last evaluation (minutes of streaming metrics) must still leave the final model."""
    from videollm_online.train import trainer

    out = tmp_path / "run"
    budget = [
        "--max-time-minutes",
        "10",
        "--save-steps",
        "4",
        "--learning-rate",
        "1e-3",
        "--eval-data",
        str(world / "conversations.jsonl"),
        "--eval-steps",
        "5",
    ]
    assert main(train_args(world, out, *budget, "--max-steps", "4")) == 0
    (out / "checkpoint-4" / "time_budget.json").write_text(json.dumps({"spent_s": 600.0}))
    shutil.rmtree(out / "final")
    final_there = []
    evaluate = trainer.LiveTrainer.evaluate

    def recording_evaluate(self, *args, **kwargs):
        final_there.append((self.state.global_step, (out / "final" / "videollm_online.json").exists()))
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(trainer.LiveTrainer, "evaluate", recording_evaluate)
    assert main([*train_args(world, out, *budget, "--max-steps", "8"), "--resume"]) == 0
    assert final_there == [(5, True)]  # step 5: the budget is spent and an evaluation is due; it waits for the save
    history = json.loads((out / "log_history.json").read_text())
    assert [e["step"] for e in history if "eval_lm_ppl" in e] == [4, 5]  # 4: the first run's last step
    assert (out / "checkpoint-5" / "time_budget.json").exists()
