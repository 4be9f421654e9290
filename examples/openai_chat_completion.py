"""Ask a running `videollm-online serve` about a whole clip with the official `openai` client: the narration and the
answer stream back as chat completion chunks, one line per turn with its video time.

    videollm-online serve &                                        # in another terminal: the API on 127.0.0.1:8000
    python examples/openai_chat_completion.py clip.mp4 --ask "2:What is he doing?"
    python examples/openai_chat_completion.py /data/clips/a.mp4 --server-path   # the server reads it (it must have
                                                                                # been started with --allowed-video-dir)
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a video file")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: http://127.0.0.1:8000)")
    parser.add_argument("--token", default="unused", help="the server's bearer token, if it requires one")
    parser.add_argument("--ask", metavar="SECONDS:QUESTION", help="a question and the video time it is asked at")
    parser.add_argument(
        "--threshold", type=float, help="silence threshold (default: the model's; 1: narrate every frame)"
    )
    parser.add_argument(
        "--server-path",
        action="store_true",
        help="send the file's absolute path for the server to read instead of uploading it",
    )
    args = parser.parse_args()

    import openai

    path = Path(args.video).resolve()
    if args.server_path:
        url = path.as_uri()
    else:
        if not path.is_file():
            print(f"openai_chat_completion: no such file: {args.video}", file=sys.stderr)
            return 2
        kind = mimetypes.guess_type(path.name)[0] or "video/mp4"
        url = f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()
    content: list[dict] = [{"type": "video_url", "video_url": {"url": url}}]
    extra: dict = {}
    if args.ask:
        seconds, _, question = args.ask.partition(":")
        try:
            extra["question_time"] = float(seconds)
        except ValueError:
            print(f"openai_chat_completion: --ask expects SECONDS:QUESTION, got {args.ask!r}", file=sys.stderr)
            return 2
        content.insert(0, {"type": "text", "text": question.strip()})
    if args.threshold is not None:
        extra["threshold"] = args.threshold

    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.token, max_retries=0)
    started = time.monotonic()
    try:
        model = client.models.list().data[0].id
        stream = client.chat.completions.create(
            model=model, stream=True, extra_body=extra, messages=[{"role": "user", "content": content}]
        )
        turns, finish = 0, None
        for chunk in stream:
            choice = chunk.choices[0]
            if choice.delta.content:
                print(choice.delta.content, end="", flush=True)
                turns += 1
            finish = choice.finish_reason or finish
    except openai.APIStatusError as error:
        message = error.body.get("message") if isinstance(error.body, dict) else None
        print(f"openai_chat_completion: HTTP {error.status_code}: {message or error.message}", file=sys.stderr)
        return 2
    except openai.APIConnectionError as error:
        print(f"openai_chat_completion: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    print()
    print(f"{model}: {turns} turns in {time.monotonic() - started:.1f} s (finish_reason: {finish})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
