"""`videollm-online eval` end to end on a fixture COIN dataset: real clips (PyAV), `data preprocess`, a COIN.json,
and a scripted model that always answers "Cut.", so every accuracy is known by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from tiny_models import scripted_model
from videollm_online.apps.cli import main
from videollm_online.core.checkpoint import save_checkpoint


def write_clip(path, size: tuple[int, int], frames: int, fps: int) -> None:
    """A real H.264 clip of `frames` changing pictures (PyAV)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            picture = np.full((height, width, 3), (i * 37) % 256, dtype=np.uint8)
            picture[:, : (i * 3) % width] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())


COIN_JSON = {
    "database": {
        "vidA": {
            "class": "CutAndFold",
            "subset": "testing",
            "start": 0.5,
            "end": 7.5,
            "recipe_type": 1,
            "annotation": [
                {"segment": [0.5, 2.0], "id": "1", "label": "cut"},
                {"segment": [2.5, 4.0], "id": "2", "label": "fold"},
                {"segment": [4.5, 6.0], "id": "3", "label": "wash"},
                {"segment": [6.2, 7.5], "id": "1", "label": "cut"},
            ],
        },
        "vidB": {
            "class": "WashIt",
            "subset": "testing",
            "start": 0.0,
            "end": 5.0,
            "recipe_type": 2,
            "annotation": [
                {"segment": [0.0, 2.0], "id": "3", "label": "wash"},
                {"segment": [2.5, 4.5], "id": "1", "label": "cut"},
            ],
        },
        "vidC": {
            "class": "FoldIt",
            "subset": "training",
            "start": 0.0,
            "end": 1.0,
            "recipe_type": 3,
            "annotation": [{"segment": [0.0, 1.0], "id": "2", "label": "fold"}],
        },
    }
}


@pytest.fixture(scope="module")
def coin(tmp_path_factory):
    """A COIN data root (COIN.json + frames/ at 2 fps) and a scripted checkpoint."""
    root = tmp_path_factory.mktemp("coin")
    (root / "videos").mkdir()
    write_clip(root / "videos" / "vidA.mp4", size=(64, 48), frames=32, fps=4)  # 8 s -> 16 frames at 2 fps
    write_clip(root / "videos" / "vidB.mp4", size=(48, 64), frames=20, fps=4)  # 5 s -> 10 frames
    (root / "COIN.json").write_text(json.dumps(COIN_JSON))
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
    model, template = scripted_model(" Cut.")
    checkpoint = save_checkpoint(model, template, root.parent / "scripted-ckpt")
    return root, checkpoint


def run_eval(coin, dataset, out, *extra):
    root, checkpoint = coin
    return main(
        [
            "eval",
            "--model",
            str(checkpoint),
            "--dataset",
            dataset,
            "--data-root",
            str(root),
            "--max-new-tokens",
            "8",
            "-q",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_report_into_the_model_card(coin, tmp_path, capsys):
    root, checkpoint = coin
    assert run_eval(coin, "coin-step", tmp_path / "step.json", "--model-card") == 0
    card = (checkpoint / "README.md").read_text()
    assert "`videollm-online eval` on `coin-step` (test):" in card and "| accuracy | 0.5 |" in card
    kept = json.loads((checkpoint / "eval_results.json").read_text())
    assert kept["accuracy"] == 0.5 and "predictions" not in kept
    capsys.readouterr()
    assert main(["eval", "--model", "tiny", "--dataset", "coin-step", "--data-root", str(root), "--model-card"]) == 2
    assert "--model-card writes into a checkpoint directory" in capsys.readouterr().err


def test_coin_step(coin, tmp_path, capsys):
    assert run_eval(coin, "coin-step", tmp_path / "step.json") == 0
    report = json.loads((tmp_path / "step.json").read_text())
    assert {k: report[k] for k in ("dataset", "split", "samples", "categories", "fps", "world_size")} == {
        "dataset": "coin-step",
        "split": "test",
        "samples": 6,
        "categories": 3,
        "fps": 2.0,
        "world_size": 1,
    }
    predictions = report["predictions"]
    # frames of each step at 2 fps: ceil(2 * start) .. ceil(2 * end), clamped to the video's last frame
    assert [(p["video"], p["start_frame"], p["end_frame"], p["answer"]) for p in predictions] == [
        ("vidA", 1, 5, "Cut."),
        ("vidA", 5, 9, "Fold."),
        ("vidA", 9, 13, "Wash."),
        ("vidA", 13, 16, "Cut."),
        ("vidB", 0, 5, "Wash."),
        ("vidB", 5, 10, "Cut."),
    ]
    assert all(p["prediction"] == " Cut." and p["predicted"] == ["Cut."] for p in predictions)
    assert [p["right"] for p in predictions] == [1, 0, 0, 1, 0, 1]
    assert report["accuracy"] == pytest.approx(3 / 6)
    table = capsys.readouterr().out
    assert "accuracy" in table and "0.5" in table and "predictions" not in table


def test_coin_next_and_procedure(coin, tmp_path):
    assert run_eval(coin, "coin-next", tmp_path / "next.json") == 0
    assert json.loads((tmp_path / "next.json").read_text())["accuracy"] == pytest.approx(2 / 4)  # fold wash cut | cut
    assert run_eval(coin, "coin-procedure", tmp_path / "proc.json") == 0
    report = json.loads((tmp_path / "proc.json").read_text())
    # next steps: [fold, wash, cut], [wash, cut], [cut] | [cut]; "Cut." matches only a first step that is cut
    assert [p["answer"] for p in report["predictions"]][:2] == ["1. Fold.\n2. Wash.\n3. Cut.", "1. Wash.\n2. Cut."]
    assert [(p["right"], p["steps"]) for p in report["predictions"]] == [(0, 3), (0, 2), (1, 1), (1, 1)]
    assert report["accuracy"] == pytest.approx(2 / 7)


def test_torchrun_two_processes_give_the_same_report(coin, tmp_path):
    root, checkpoint = coin
    assert run_eval(coin, "coin-step", tmp_path / "one.json", "--limit", "5") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "videollm_online.apps.cli",
        "eval",
        "--model",
        str(checkpoint),
        "--dataset",
        "coin-step",
        "--data-root",
        str(root),
        "--max-new-tokens",
        "8",
        "--limit",
        "5",
        "-q",
        "--out",
        str(tmp_path / "two.json"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["predictions"] == one["predictions"] and two["accuracy"] == one["accuracy"] == pytest.approx(2 / 5)
    assert done.stdout.count("accuracy") == 1  # only rank 0 reports


def test_user_errors_are_one_line(coin, tmp_path, capsys):
    root, checkpoint = coin
    cases = [
        (
            ["--dataset", "coin-steps", "--data-root", str(root)],
            "unknown dataset 'coin-steps'; valid datasets: world, coin-step, coin-task",
        ),
        (["--dataset", "coin-step", "--data-root", str(tmp_path / "nowhere")], "no such directory"),
        (["--dataset", "coin-step", "--data-root", str(tmp_path)], f"expected {tmp_path / 'COIN.json'}"),
        (
            ["--dataset", "coin-step", "--data-root", str(root), "--frames", str(tmp_path)],
            f"no preprocessed frames for coin-step: expected one .safetensors file per video in {tmp_path}",
        ),
        (["--dataset", "ego4d-lta", "--data-root", str(root)], "no fho_lta_taxonomy.json in"),
        (["--dataset", "world", "--data-root", str(root)], "is not a synthetic world"),
        (["--dataset", "coin-step", "--data-root", str(root), "--split", "val"], "COIN has no 'val' split"),
        (["--dataset", "coin-step", "--data-root", str(root), "--split", "dev"], "unknown split 'dev'"),
    ]
    for args, message in cases:
        assert main(["eval", "--model", str(checkpoint), "-q", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_ego4d_lta(coin, tmp_path):
    """Two LTA windows of one clip; "Cut." has no numbered line, so every answer is the fallback `put knife` x 20,
    and the edit distances to the labels (verb k % 3, noun k % 4 for k = 8..27) are counts of mismatches."""
    _, checkpoint = coin
    taxonomy = {"verbs": ["put_(place,_leave,_drop)", "take", "cut"], "nouns": ["knife", "board", "nut_(food)", "pan"]}
    clips = [
        {
            "clip_uid": "c1",
            "video_uid": "v1",
            "clip_parent_start_sec": 10.0,
            "action_idx": k,
            "action_clip_start_sec": k / 2 - 9.75,
            "action_clip_end_sec": k / 2 - 9.25,
            "verb_label": k % 3,
            "noun_label": k % 4,
        }
        for k in range(29)
    ]
    (tmp_path / "fho_lta_taxonomy.json").write_text(json.dumps(taxonomy))
    (tmp_path / "fho_lta_val.json").write_text(json.dumps({"clips": clips}))
    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "v1.mp4", size=(32, 32), frames=80, fps=4)  # 20 s -> 40 frames
    assert (
        main(
            [
                "data",
                "preprocess",
                str(tmp_path / "videos"),
                "--out",
                str(tmp_path / "frames"),
                "--fps",
                "2",
                "--resolution",
                "32",
                "-q",
            ]
        )
        == 0
    )
    out = tmp_path / "lta.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(checkpoint),
                "--dataset",
                "ego4d-lta",
                "--data-root",
                str(tmp_path),
                "--max-new-tokens",
                "8",
                "--num-beams",
                "1",
                "-q",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert (report["samples"], report["split"], report["beams"]) == (2, "val", 1)
    # window 0 shows actions 0..7 (0.25 .. 4.25 s): frames round(0.5) = 0 .. round(8.5) = 8 (halves to even);
    # window 1 actions 1..8 (0.75 .. 4.75 s): round(1.5) = 2 .. round(9.5) = 10
    assert [(p["start_frame"], p["end_frame"]) for p in report["predictions"]] == [(0, 9), (2, 11)]
    assert report["predictions"][0]["verb"] == [[0] * 20] and report["predictions"][0]["noun"] == [[0] * 20]
    # window 0: zeros among k % 3, k = 8..27: 7; among k % 4: 5; both (k % 12 == 0): 2. Window 1 (k = 9..28): 7, 5, 2
    assert report["verb_ed"] == pytest.approx(13 / 20)
    assert report["noun_ed"] == pytest.approx(15 / 20)
    assert report["action_ed"] == pytest.approx(18 / 20)


def test_streaming_metrics_on_a_stream_dataset(tmp_path):
    """`--dataset ego4d-narration`: the streaming metrics of each row equal `evaluate_conversation` on its frames."""
    from tiny_models import make_decisive, tiny_model
    from videollm_online.core.checkpoint import load_model
    from videollm_online.data.datasets import ConvertOptions, get_loader
    from videollm_online.data.datasets.ego4d_narration import BENCHMARK_KEYS
    from videollm_online.data.frames import FrameStore
    from videollm_online.eval import aggregate, evaluate_conversation
    from videollm_online.eval.benchmarks import frame_embeds

    narrations = [
        {"time": t, "text": f"#C C does thing {i}", "_annotation_uid": "a1"} for i, t in enumerate([0.5, 1.6, 2.4, 4.1])
    ]
    (tmp_path / "all_narrations_redacted.json").write_text(json.dumps({"videos": {"vidB": {"narrations": narrations}}}))
    for benchmark, key in BENCHMARK_KEYS.items():
        (tmp_path / f"{benchmark}_val.json").write_text(json.dumps({key: []}))
        (tmp_path / f"{benchmark}_test_unannotated.json").write_text(json.dumps({key: []}))
    (tmp_path / "goalstep_val.json").write_text(json.dumps({"videos": [{"video_uid": "vidB"}]}))
    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "vidB.mp4", size=(32, 32), frames=24, fps=4)  # 6 s -> 12 frames
    assert (
        main(
            [
                "data",
                "preprocess",
                str(tmp_path / "videos"),
                "--out",
                str(tmp_path / "frames"),
                "--fps",
                "2",
                "--resolution",
                "32",
                "-q",
            ]
        )
        == 0
    )
    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    save_checkpoint(model, template, tmp_path / "ckpt")
    out = tmp_path / "stream.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "ckpt"),
                "--dataset",
                "ego4d-narration",
                "--data-root",
                str(tmp_path),
                "--threshold",
                "0.6",
                "-q",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert (report["dataset"], report["split"], report["num_conversations"], report["threshold"]) == (
        "ego4d-narration",
        "val",
        1,
        0.6,
    )

    model, template, _ = load_model(str(tmp_path / "ckpt"))
    (row,) = get_loader("ego4d-narration")(ConvertOptions(tmp_path, "val", fps=2, video_frames={"vidB": 12})).rows
    frames = FrameStore(tmp_path / "frames").load("vidB", row["start_frame"], row["end_frame"])
    expected = aggregate(
        [
            evaluate_conversation(
                model, template, row["conversation"], frame_embeds(model, frames), fps=2.0, threshold=0.6
            )
        ]
    ).to_dict()
    assert expected["num_turns"] >= 3
    assert {key: report[key] for key in expected} == pytest.approx(expected)
