"""The command line derived from the typed configs: every option has help, shows its config's default, and the
commands that keep their settings in a file read it (`--config`) and write it (`--print-config`)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from videollm_online.apps.cli import build_parser, main
from videollm_online.apps.cli.options import Parser
from videollm_online.core.policy import DEFAULT_MAX_NEW_TOKENS, DEFAULT_THRESHOLD

CONFIG_COMMANDS = ["train", "train-vision", "eval", "serve"]


def command_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Parser]:
    """Every (sub)command's parser, nested `data` tools included, by its command line."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(command_parsers(sub, f"{prefix}{name} "))
    return found


PARSERS = command_parsers(build_parser())


def shown_help(parser: Parser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def test_every_command_is_built_with_a_description_and_an_example():
    assert {"narrate", "download", "render", "data tokenize", "data synth-world", "data preprocess"} <= set(PARSERS)
    assert {"data features", "data convert", "data synthesize", "eval", "train", "train-vision", "serve", "demo"} <= (
        set(PARSERS)
    )
    for name, parser in PARSERS.items():
        assert parser.description and "example" in parser.description, name


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help(name):
    for action in PARSERS[name]._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), (name, action.dest)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_defaults_are_the_configs_and_help_shows_them(name):
    parser = PARSERS[name]
    for dest, field in parser.fields.items():
        action = next(action for action in parser._actions if action.dest == dest)
        if field.default is not dataclasses.MISSING:
            expected = field.default
        elif field.default_factory is not dataclasses.MISSING:
            expected = field.default_factory()
        else:  # a required field: the command's default (`eval --dataset world`), or checked after --config
            expected = action.default if dest not in parser.required_fields else None
        if isinstance(expected, tuple):  # a repeatable option collects a list
            expected = list(expected)
        assert action.default == expected, (name, dest)
        if action.default not in (None, True, False, [], ()):
            assert f"(default: {action.default})" in shown_help(parser, action), (name, dest)


def test_shared_options_have_one_default():
    for name, parser in PARSERS.items():
        actions = {action.dest: action for action in parser._actions}
        if "max_new_tokens" in actions and name not in ("eval", "data synthesize"):
            assert actions["max_new_tokens"].default == DEFAULT_MAX_NEW_TOKENS, name
        if "threshold" in actions:
            assert actions["threshold"].default is None, name
            assert str(DEFAULT_THRESHOLD) in shown_help(parser, actions["threshold"]), name
        if "cache_tokens" in actions:
            assert actions["cache_tokens"].default is None, name


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_print_config_round_trips(command, tmp_path, capsys):
    code, printed, _ = run([command, "--print-config"], capsys)
    assert code == 0 and printed
    path = tmp_path / "c.yaml"
    path.write_text(printed)
    code, again, _ = run([command, "--config", path, "--print-config"], capsys)
    assert code == 0 and again == printed


def test_the_command_line_overrides_the_config_file(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("lora_r: 8\nlearning_rate: 1.0e-3\nbf16: true\ndata: rows.jsonl\n")
    code, printed, _ = run(["train", "--config", path, "--lora-r", "4", "--print-config"], capsys)
    config = yaml.safe_load(printed)
    assert code == 0
    assert (config["lora_r"], config["learning_rate"], config["bf16"], config["data"]) == (4, 1e-3, True, "rows.jsonl")
    assert config["batch_size"] == 4  # TrainConfig's default


def test_a_config_file_can_hold_the_required_options(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text(f"data: {tmp_path}/none.jsonl\n")
    with pytest.raises(SystemExit) as exit_info:  # a usage error, as argparse's own
        main(["train", "--config", str(path)])
    assert exit_info.value.code == 2 and "required: --frames, --output-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, key",
    [
        ("lora_rank: 8\n", "lora_rank"),
        ("lora_r: many\n", "lora_r"),
        ("learning_rate: .nan\n", "learning_rate"),
        ("bf16: 3\n", "bf16"),
        ("report_to: stdout\n", "report_to"),
        ("batch_size: null\n", "batch_size"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key_and_the_file(text, key, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run(["train", "--config", path, "--print-config"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videollm-online: error:"), err
    assert key in lines[0] and str(path) in lines[0]


def test_print_config_round_trips_through_the_console_command(tmp_path):
    """The issue's own check: `train --print-config > c.yaml && train --config c.yaml --print-config`."""
    import subprocess
    import sys

    def run_command(*args):
        command = [sys.executable, "-m", "videollm_online", "train", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=True).stdout

    (tmp_path / "c.yaml").write_text(run_command("--print-config"))
    assert run_command("--config", "c.yaml", "--print-config") == (tmp_path / "c.yaml").read_text()


def test_the_launch_glue_of_data_does_not_import_the_command_line():
    import ast
    from pathlib import Path

    import videollm_online.data

    for path in Path(videollm_online.data.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module if node.level == 0 else "videollm_online." + node.module
                assert not module.startswith("videollm_online.apps"), path


@pytest.mark.parametrize(
    "options, merged",
    [([], False), (["--engine", "fast"], True), (["--weights", "int8"], True), (["--merge-lora"], True)],
)
def test_the_fast_engine_loads_the_bundled_model_with_its_lora_merged(options, merged):
    """The fast engine folds the adapter into its weights; merged at load, the model shares them (no second copy)."""
    from videollm_online.apps.cli.shared import load_model_from_args

    args = build_parser().parse_args(["narrate", "clip.mp4", *options])
    model, _, _ = load_model_from_args(args)
    has_lora = any("lora_A" in name for name, _ in model.named_parameters())
    assert has_lora is not merged


def test_vision_fp8_off_a_gpu_is_one_line_before_the_model_loads(tmp_path, capsys):
    from clips import write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=10)
    code, out, err = run(["narrate", clip, "--vision-fp8", "--device", "cpu"], capsys)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "--vision-fp8 runs on a GPU" in lines[0], err
