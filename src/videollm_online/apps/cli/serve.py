"""`videollm-online serve`: the model over HTTP for programs."""

from __future__ import annotations

import argparse

from .config_file import add_config_options
from .options import Option, add_fields, build, positive_float, positive_int
from .shared import BATCHED_CACHE_TOKENS, add_engine_options, add_model_options, load_model_from_args

HELP = "serve the model over HTTP: a WebSocket streaming API, SSE, health and metrics (docs/api.md)"
DESCRIPTION = """\
Serve the model to programs: clients stream frames and questions over a WebSocket and receive the turns as they
are said (protocol in docs/api.md; a Python client is videollm_online.apps.client). Binds 127.0.0.1 unless --host
says otherwise; set --token before exposing it. The options can be kept in a YAML file (--config).

example:
  videollm-online serve --model chenjoya/videollm-online-8b-v1plus --device cuda --engine fast --port 8000
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    from ...apps.server.config import TOKEN_ENV, ServerConfig

    parser = commands.add_parser("serve", help=HELP, description=DESCRIPTION)
    add_model_options(parser)
    add_fields(
        parser,
        ServerConfig,
        {
            "host": None,
            "port": None,
            "token": Option(
                help="Require `Authorization: Bearer TOKEN` on every endpoint but /health (default: "
                f"${TOKEN_ENV}; unset: no auth)."
            ),
            "max_sessions": None,
            "allowed_video_dirs": Option(flags=("--allowed-video-dir",), repeat=True, metavar="DIR"),
            "max_upload_bytes": Option(type=positive_int),
            "max_frame_bytes": None,
            "max_frame_rate": Option(type=positive_float),
            "max_pending_frames": None,
            "max_query_rate": Option(type=positive_float),
            "max_pending_queries": Option(type=positive_int),
            "idle_timeout": Option(type=positive_float),
        },
    )
    add_engine_options(parser, ["engine", "cache_tokens"])
    add_config_options(parser)
    parser.set_defaults(func=cmd_serve, command_parser=parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import ServerConfig
    from ..server.run import serve_model

    config = build(
        ServerConfig,
        args,
        token=args.token or ServerConfig.token_from_env(),
        allowed_video_dirs=tuple(args.allowed_video_dirs or ()),
    )
    model, template, name = load_model_from_args(args)
    if args.engine == "fast":  # every session's frames and tokens batched into one forward per step
        from ..server.batched import BatchedWorker

        worker = BatchedWorker(
            model,
            template,
            name,
            max_sessions=args.max_sessions,
            cache_tokens=args.cache_tokens or BATCHED_CACHE_TOKENS,
        )
        serve_model(worker, None, name, config)
    else:
        serve_model(model, template, name, config)
    return 0
