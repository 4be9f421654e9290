"""The wire format of the streaming API, shared by the server and the client (docs/api.md describes it).

A frame travels as one binary WebSocket message: a 4-byte big-endian header length N, N bytes of UTF-8 JSON
(`{"video_time": 1.5}`), then the JPEG or PNG bytes. One message per frame keeps the header and its picture
together (no pairing of a text message with the next binary one). Everything else is a JSON text message with a
`type`; every server event carries `seq`, counting from 0 within a session, so a gap means a lost event.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 4096

# Client -> server (JSON text messages; frames are binary).
SESSION_UPDATE = "session.update"
QUERY = "conversation.item.create"
FINISH = "session.finish"
FRAME = "input_frame.append"  # the `type` a frame header may carry; binary messages are frames either way

# Server -> client.
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SESSION_CLOSED = "session.closed"
FRAME_PROCESSED = "input_frame.processed"
FRAME_DROPPED = "input_frame.dropped"
ITEM_CREATED = "conversation.item.created"
RESPONSE_CREATED = "response.created"
RESPONSE_DELTA = "response.text.delta"
RESPONSE_DONE = "response.done"
ERROR = "error"

# Error codes (the `code` of an `error` event).
INVALID_FRAME = "invalid_frame"
FRAME_TOO_LARGE = "frame_too_large"
RATE_LIMITED = "rate_limited"
INVALID_MESSAGE = "invalid_message"
SESSION_LIMIT = "session_limit"
IDLE_TIMEOUT = "idle_timeout"
CONTEXT_FULL = "context_full"
SERVER_ERROR = "server_error"

IMAGE_FORMATS = ("JPEG", "PNG")


class FrameError(ValueError):
    """A frame message that cannot be used; the message says why."""


def pack_frame(video_time: float, image_bytes: bytes) -> bytes:
    """One binary message carrying an encoded picture and its video time."""
    header = json.dumps({"type": FRAME, "video_time": float(video_time)}).encode()
    return HEADER_LENGTH.pack(len(header)) + header + image_bytes


def unpack_frame(message: bytes) -> tuple[float, bytes]:
    """(video_time, image bytes) of a binary frame message; raises FrameError when it is malformed."""
    if len(message) < HEADER_LENGTH.size:
        raise FrameError("a frame message starts with a 4-byte big-endian header length")
    (length,) = HEADER_LENGTH.unpack_from(message)
    if length == 0 or length > MAX_HEADER_BYTES or HEADER_LENGTH.size + length > len(message):
        raise FrameError(
            f"bad frame header length {length}: expected 1..{MAX_HEADER_BYTES} bytes of JSON followed by the image"
        )
    from .schema import MessageError, parse_frame_header  # pydantic: imported when a server or client runs

    try:
        video_time = parse_frame_header(message[HEADER_LENGTH.size : HEADER_LENGTH.size + length])
    except MessageError as error:
        raise FrameError(str(error).replace("the message is", "the frame header is")) from None
    image = message[HEADER_LENGTH.size + length :]
    if not image:
        raise FrameError("the frame message has no image bytes after its header")
    return float(video_time), image


def decode_image(data: bytes, resolution: int, max_pixels: int) -> np.ndarray:
    """JPEG or PNG bytes -> the (R, R, 3) uint8 frame the model reads (letterboxed as `narrate` does)."""
    from PIL import Image, UnidentifiedImageError

    from ...video.letterbox import letterbox

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise FrameError(f"frames must be JPEG or PNG, got {image.format}")
            width, height = image.size
            if width * height > max_pixels:  # checked before decoding: a small file may hold a huge picture
                raise FrameError(f"the frame is {width}x{height} pixels; the limit is {max_pixels} pixels")
            image.load()
            return letterbox(image.convert("RGB"), resolution)
    except FrameError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise FrameError(f"the frame bytes are not a readable JPEG or PNG image ({type(error).__name__})") from None


def encode_image(image: np.ndarray, format: str = "JPEG", quality: int = 90) -> bytes:
    """An (H, W, 3) uint8 RGB array as JPEG or PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": quality} if format.upper() == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=format, **options)
    return buffer.getvalue()
