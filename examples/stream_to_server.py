"""Stream a video file or a webcam to a running `videollm-online serve` and print the assistant's turns as they
are generated.

    videollm-online serve &                                        # in another terminal: the API on 127.0.0.1:8000
    python examples/stream_to_server.py clip.mp4 --ask "5:What is he doing?"
    python examples/stream_to_server.py /dev/video0 --url ws://gpu-box:8000 --token "$VIDEOLLM_ONLINE_TOKEN"
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from videollm_online.apps.client import ApiError, stream_video
from videollm_online.apps.server import protocol as P
from videollm_online.video import VideoSourceError


def parse_ask(value: str) -> tuple[float, str]:
    seconds, _, text = value.partition(":")
    try:
        return float(seconds), text.strip()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS:QUESTION, got {value!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a video file, /dev/videoN, an rtsp/http URL, or a folder of images")
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the server (default: ws://127.0.0.1:8000)")
    parser.add_argument("--token", help="bearer token, when the server requires one")
    parser.add_argument("--fps", type=float, help="frames per second sent (default: the model's)")
    parser.add_argument("--threshold", type=float, help="silence threshold of the session (default: the model's)")
    parser.add_argument(
        "--ask",
        action="append",
        type=parse_ask,
        default=[],
        metavar="SECONDS:QUESTION",
        help="a question at a video time (repeatable)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="send a file as fast as the server takes it, not in "
        "real time (frames the server cannot keep up with drop)",
    )
    args = parser.parse_args()

    def show(event: dict) -> None:
        kind = event["type"]
        if kind == P.SESSION_CREATED:  # what another program needs to follow this session over SSE
            session = event["session"]
            base = args.url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
            print(f"session {session['id']} on {session['model']}", file=sys.stderr)
            secret = f" -H 'X-Session-Secret: {session['secret']}'" if session.get("secret") else ""
            token = ' -H "Authorization: Bearer $VIDEOLLM_ONLINE_TOKEN"' if args.token else ""
            print(f"follow it: curl -N{token}{secret} {base}/v1/sessions/{session['id']}/events", file=sys.stderr)
        elif kind == P.FRAME_DROPPED:  # the server fell behind and dropped its oldest waiting frame
            print(f"[{event['video_time']:.1f}s] frame dropped ({event['reason']})", file=sys.stderr)
        elif kind == P.ITEM_CREATED:
            print(f"[{event['item']['video_time']:.1f}s] User: {event['item']['content']}", flush=True)
        elif kind == P.RESPONSE_CREATED:
            print("Assistant:", end="", flush=True)
        elif kind == P.RESPONSE_DELTA:  # the turn as it is generated
            print(event["delta"], end="", flush=True)
        elif kind == P.RESPONSE_DONE:
            print(f"  [{event['video_time']:.1f}s]", flush=True)
        elif kind == P.ERROR:
            print(f"error ({event['error']['code']}): {event['error']['message']}", file=sys.stderr)

    try:
        asyncio.run(
            stream_video(
                args.url,
                args.source,
                token=args.token,
                fps=args.fps,
                threshold=args.threshold,
                realtime=not args.fast,
                queries=args.ask,
                on_event=show,
            )
        )
    except (ApiError, VideoSourceError, OSError) as error:
        print(f"stream_to_server: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
