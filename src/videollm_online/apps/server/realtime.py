"""Client text messages applied to a streaming session: the models of `schema` turned into the session's inputs.

Today's shapes and the OpenAI Realtime ones end in the same calls: a question (`text`, or an item's `input_text`
parts) becomes `LiveSession.add_query`; an `input_image` part (a data URL) becomes a frame, exactly as if it had
come as a binary frame message (same size, rate and order checks).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import protocol as P
from .schema import ConversationItemCreate, SessionFinish, SessionUpdate, parse_client_message

if TYPE_CHECKING:
    from .sessions import LiveSession


def apply_message(session: LiveSession, text: str) -> None:
    """Parse one client text message and hand it to the session; ValueError (with the field and the problem) for
    a bad one, which the caller answers with an `invalid_message` error event."""
    message = parse_client_message(text)
    if isinstance(message, SessionUpdate):
        session.update(message.settings())
    elif isinstance(message, SessionFinish):
        session.finish()
    elif isinstance(message, ConversationItemCreate):
        add_item(session, message)
    # ResponseCreate: nothing to do; answers and narration come by themselves


def add_item(session: LiveSession, message: ConversationItemCreate) -> None:
    """Frames first (in the order given), then the question, at `video_time` or the latest frame's time."""
    asked_at = message.question_time()
    for image in message.images():
        data = image.image_bytes()
        if image.video_time is not None:
            video_time = float(image.video_time)
        elif asked_at is not None:
            video_time = asked_at
        else:  # a live client that sends no times: its frames are as old as the session
            video_time = max(0.0, time.time() - session.created)
        session.add_frame(P.pack_frame(video_time, data))
    question = message.question()
    if question is not None:
        query: dict = {"text": question}
        if asked_at is not None:
            query["video_time"] = asked_at
        session.add_query(query)
