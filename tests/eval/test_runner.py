"""`videollm-online eval` end to end on a one-video synthetic world with a tiny checkpoint."""

import json

from tiny_models import make_decisive, tiny_model
from videollm_online.apps.cli import main
from videollm_online.core.checkpoint import save_checkpoint


def test_eval_command_writes_the_metrics(tmp_path, capsys):
    world = tmp_path / "world"
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(world),
                "--videos",
                "1",
                "--seed",
                "5",
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
    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    save_checkpoint(model, template, tmp_path / "ckpt")
    out = tmp_path / "metrics.json"
    assert main(["eval", "--model", str(tmp_path / "ckpt"), "--data-root", str(world), "-q", "-o", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["videos"] == 1 and metrics["num_conversations"] == 2 and metrics["num_turns"] >= 2
    assert metrics["lm_ppl"] > 1 and metrics["time_diff"] >= 0
    assert 0 <= metrics["fluency"] <= 1 and 0 <= metrics["lm_correctness"] <= 1
    assert metrics["event_recall"] == 0.0  # random weights say no ground-truth sentence
    assert metrics["narrations"] == len(json.loads((world / "annotations" / "000000.json").read_text())["narrations"])
    assert "event_precision" in capsys.readouterr().out
    # The breakdown of missed narrations is there, each a fraction (random weights parse no sentence: all 0).
    for name in (
        "event_turn_near",
        "event_kind_right",
        "event_colour_right",
        "event_shape_right",
        "event_target_right",
    ):
        assert 0.0 <= metrics[name] <= 1.0, name
    # The fast engine narrates the same turns; a capped cache still narrates the whole video.
    fast = tmp_path / "fast.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "ckpt"),
                "--data-root",
                str(world),
                "-q",
                "-o",
                str(fast),
                "--engine",
                "fast",
            ]
        )
        == 0
    )
    fast_metrics = json.loads(fast.read_text())
    assert (metrics["engine"], fast_metrics["engine"]) == ("default", "fast")
    assert {**fast_metrics, "engine": "default"} == metrics
    capped = tmp_path / "capped.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "ckpt"),
                "--data-root",
                str(world),
                "-q",
                "-o",
                str(capped),
                "--cache-tokens",
                "200",
            ]
        )
        == 0
    )
    assert json.loads(capped.read_text())["turns_said"] > 0
    assert json.loads(capped.read_text())["cache_tokens"] == 200
    # One-byte weights: the narration and the teacher-forced metrics both run on them.
    quantised = tmp_path / "int8.json"
    argv = ["eval", "--model", str(tmp_path / "ckpt"), "--data-root", str(world), "-q", "-o", str(quantised)]
    assert main([*argv, "--weights", "int8"]) == 0
    int8_metrics = json.loads(quantised.read_text())
    assert int8_metrics["weights"] == "int8" and int8_metrics["engine"] == "fast"
    assert int8_metrics["lm_ppl"] != metrics["lm_ppl"]  # the model's own forward ran on the int8 weights
    assert abs(int8_metrics["lm_ppl"] - metrics["lm_ppl"]) < 0.05 * metrics["lm_ppl"]  # close to the float one
    assert main(["eval", "--data-root", str(tmp_path / "nowhere")]) == 2
