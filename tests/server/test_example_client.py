"""examples/stream_to_server.py shows what a user needs: the session id (and how to follow it) and dropped frames."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from api_helpers import start_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stream_to_server.py"


def test_the_example_prints_the_session_and_dropped_frames(tiny_decisive, make_clip):
    clip = make_clip("clip.mp4", frames=60, fps=10)  # 6 s: 12 frames at 2 fps, sent at once (--fast)
    # One frame may wait: the rest of a burst is dropped, oldest first, while the model works.
    with start_server(*tiny_decisive, max_pending_frames=1) as server:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), str(clip), "--url", server.ws_url, "--threshold", "1", "--fast"],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr
    session = re.search(r"^session ([0-9a-f]+) on tiny$", result.stderr, re.MULTILINE)
    assert session, result.stderr
    follow = re.search(r"^follow it: curl -N .*(http://\S+)$", result.stderr, re.MULTILINE)
    assert follow and follow.group(1) == f"{server.url}/v1/sessions/{session.group(1)}/events", result.stderr
    dropped = re.findall(r"^\[(\d+\.\d)s\] frame dropped \(queue_full\)$", result.stderr, re.MULTILINE)
    assert dropped, result.stderr
    assert len(set(dropped)) == len(dropped)  # each frame dropped once
