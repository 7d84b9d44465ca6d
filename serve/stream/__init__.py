"""``WS /v1/stream``: speech in as it is produced, video frames out as soon as they exist.

Protocol (client → server; docs/serving.md has the full text, limits and close codes):

1. a text message ``{"type": "start", "portrait_id": ..., "sample_rate": 16000, "channels": 1,
   "format": "pcm16", ...options}`` (options as ``/v1/generate``: steps, guidance, seed,
   lip/eye/global_scale, blinks, crop_only; ``stats``; ``api_key`` when the server has one and
   the client cannot send the ``X-API-Key`` header) within ``stream.start_timeout_s``;
2. binary messages of little-endian PCM16 audio at that rate (interleaved if stereo), as it is
   produced: up to ``limits.max_chunk_kb`` each, no more than ``stream.max_buffer_s`` ahead of
   real time, ``limits.max_stream_s`` in all;
3. a text message ``{"type": "end"}``: the rest of the audio is generated and flushed.

Server → client: ``{"type": "ready", ...}`` (fps, window, the latency it gives, the session's
limits), then one binary message per video frame, in order: a 4-byte big-endian header length,
the JSON header ``{"type": "frame", "index", "t", "audio": [first, end)}`` (``audio`` is the
frame's span of the client's own samples, to play in sync) and the JPEG. After the end message:
``{"type": "end", "frames": N}`` and close 1000. Errors: ``{"type": "error", "error": {code,
message}}`` then a close code from :data:`CLOSE`.

The ingress holds the stream's state (CPU data only, :mod:`serve.stream.state`) and sends it with
each step, so every step may go to any generator replica: autoscaling moves streams freely, and a
step whose replica died is run again on another (:mod:`serve.stream.session`).
"""

from serve.stream.protocol import CLOSE, STATUS_CLOSE, StartMessage, pack_frame, unpack_frame
from serve.stream.session import run_session
from serve.stream.state import attach, detach, jpeg, needs_portrait, open_stream, step_stream

__all__ = ["CLOSE", "STATUS_CLOSE", "StartMessage", "attach", "detach", "jpeg", "needs_portrait",
           "open_stream", "pack_frame", "run_session", "step_stream", "unpack_frame"]
