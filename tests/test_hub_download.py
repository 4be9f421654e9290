"""Hub ids download on first use, through the real huggingface_hub over real HTTP, from a local stand-in for the hub
(tests/hub_server.py, HF_ENDPOINT); never when downloads are off; a gated base model is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, LlamaForCausalLM, SiglipVisionModel

from hub_server import FakeHub
from videollm_online.core.checkpoint import RELEASED_LORA_TARGETS
from videollm_online.core.config import TINY_LLM, TINY_VISION
from videollm_online.core.text import build_tiny_tokenizer

ADAPTER, LLM, VISION, GATED = "someone/tiny-live-v1plus", "tiny-org/tiny-llama", "tiny-org/tiny-siglip", "meta/gated"
TINY_BASES = ["--preset", "tiny", "--llm", LLM, "--vision", VISION]


class SeedLiveLlama(LlamaForCausalLM):
    """The released checkpoint's module layout: a LlamaForCausalLM with a `connector` attribute."""

    def __init__(self, config):
        super().__init__(config)
        width = TINY_VISION["hidden_size"]
        self.connector = nn.Sequential(nn.Linear(width, 32), nn.GELU(), nn.Linear(32, 32))


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Directories laid out as the hub repos are: a seed-layout adapter, a tiny Llama with its tokenizer (its
    `original/` copy must not be fetched, as the 8B repo's .pth files must not), a tiny SigLIP."""
    root = tmp_path_factory.mktemp("repos")
    torch.manual_seed(0)
    llm = root / "llm"
    LlamaForCausalLM(AutoConfig.for_model(**TINY_LLM)).save_pretrained(llm)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(llm)
    (llm / "original").mkdir()
    (llm / "original" / "consolidated.00.pth").write_bytes(b"\0" * 4096)
    vision = root / "vision"
    SiglipVisionModel(AutoConfig.for_model(**TINY_VISION)).save_pretrained(vision)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=RELEASED_LORA_TARGETS, modules_to_save=["connector"], task_type="CAUSAL_LM"
    )
    adapter = root / "adapter"
    get_peft_model(SeedLiveLlama.from_pretrained(llm), lora).save_pretrained(adapter)
    tokenizer.add_tokens(["<v>"], special_tokens=True)
    tokenizer.save_pretrained(adapter)
    return {ADAPTER: adapter, LLM: llm, VISION: vision}


@pytest.fixture
def hub(repos):
    with FakeHub() as server:
        for repo_id, directory in repos.items():
            server.add(repo_id, directory)
        server.add(GATED, repos[LLM], gated=True)
        yield server


def cli(hub, tmp_path, *args, **env):
    environment = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "VIDEOLLM_ONLINE_CACHE": str(tmp_path / "cache"),
        **env,
    }
    if "HF_HUB_OFFLINE" not in env:
        environment.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [sys.executable, "-m", "videollm_online.apps.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def downloads(hub, repo_id: str) -> list[str]:
    return [path for method, path in hub.requests if method == "GET" and path.startswith(f"/{repo_id}/resolve/")]


def test_first_use_downloads_the_adapter_and_both_base_models_then_offline_needs_no_request(hub, tmp_path, make_clip):
    clip = make_clip("clip.mp4", frames=20, fps=10, size=(64, 48))
    first = cli(hub, tmp_path, "narrate", str(clip), "--model", ADAPTER, *TINY_BASES, "--query", "what?", "-q")
    assert first.returncode == 0, first.stderr
    assert "[0.0s] User: what?" in first.stdout
    for repo_id in (ADAPTER, LLM, VISION):
        assert downloads(hub, repo_id), f"{repo_id} was not downloaded: {hub.requests}"
    assert not [p for p in downloads(hub, LLM) if "/original/" in p], "the LLM's original/ copy was fetched"
    snapshots = tmp_path / "hf-home" / "hub" / "models--someone--tiny-live-v1plus" / "snapshots"
    assert {p.name for p in next(snapshots.iterdir()).iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}

    hub.requests.clear()
    again = cli(hub, tmp_path, "narrate", str(clip), "--model", ADAPTER, *TINY_BASES, "--offline", "-q")
    assert again.returncode == 0, again.stderr
    assert hub.requests == []


def test_download_command_fetches_ahead_with_progress_bars(hub, tmp_path):
    result = cli(hub, tmp_path, "download", ADAPTER, *TINY_BASES)
    assert result.returncode == 0, result.stderr
    assert "Fetching" in result.stderr  # huggingface_hub's own progress bars
    for repo_id in (ADAPTER, LLM, VISION):
        assert downloads(hub, repo_id)
        assert f" {repo_id}: " in result.stderr
    assert f"--model {ADAPTER}" in result.stderr.splitlines()[-1]
    hub.requests.clear()
    offline = cli(hub, tmp_path, "download", ADAPTER, *TINY_BASES, "--offline")  # all cached: nothing asked
    assert offline.returncode == 0, offline.stderr
    assert hub.requests == []


def test_gated_base_model_is_one_line_naming_the_page_and_login(hub, tmp_path):
    result = cli(hub, tmp_path, "download", ADAPTER, "--preset", "tiny", "--llm", GATED, "--vision", VISION)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("videollm-online: error: LLM 'meta/gated' is gated")
    assert f"{hub.url}/{GATED}" in lines[-1] and "hf auth login" in lines[-1]
    assert any(path.startswith(f"/api/models/{GATED}/") for _, path in hub.requests)


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_offline_never_opens_a_connection(hub, tmp_path, make_clip, how):
    clip = make_clip("clip.mp4", frames=10, fps=10, size=(64, 48))
    flag, env = (["--offline"], {}) if how == "--offline" else ([], {"HF_HUB_OFFLINE": "1"})
    result = cli(hub, tmp_path, "narrate", str(clip), "--model", ADAPTER, *TINY_BASES, *flag, **env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert "nor in the local Hugging Face cache" in result.stderr
    assert f"videollm-online download {ADAPTER}" in result.stderr
    assert hub.requests == []
    download = cli(hub, tmp_path, "download", ADAPTER, *flag, **env)
    assert download.returncode == 2 and hub.requests == []
    assert "downloads are off" in download.stderr and "videollm-online download" not in download.stderr
