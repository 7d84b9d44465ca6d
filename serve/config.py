"""The serving config (``configs/serve.yaml``): deployments' scaling, request limits, model URI.

Typed and strict like every stage's config. :func:`deployment_options` turns one deployment's
section into the keyword arguments of ``Deployment.options``; the app builder, the generated
Serve config file and the RayService manifest all come from the same numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from disenttalk.config import StrictConfig
from disenttalk.constants import CHAMPION_URI, DEFAULT_STEPS
from workflows.platform.raycluster import RayConfig


class AutoscalingOptions(StrictConfig):
    """Ray Serve ``autoscaling_config`` (replicas follow ongoing requests per replica)."""

    min_replicas: int = 1
    max_replicas: int = 2
    initial_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0
    metrics_interval_s: float = 1.0
    look_back_period_s: float = 5.0


class ActorOptions(StrictConfig):
    """``ray_actor_options`` of a replica: CPUs, GPUs (``num_gpus: 1`` puts the model on CUDA)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


class DeploymentOptions(StrictConfig):
    """One deployment: fixed ``num_replicas`` or ``autoscaling``; queue limits; resources."""

    num_replicas: int = 1
    autoscaling: AutoscalingOptions | None = None  # set → num_replicas is ignored
    max_ongoing_requests: int = 4  # requests a replica runs at once
    max_queued_requests: int = 8  # waiting for a replica beyond that → 503 (-1: unbounded)
    ray_actor_options: ActorOptions = ActorOptions()


class Limits(StrictConfig):
    """What one request may send; beyond these the caller gets 413 (or a WebSocket close)."""

    max_upload_mb: float = 20.0  # one multipart file (image or audio)
    max_audio_s: float = 60.0  # /v1/generate audio after decoding (the video is built in memory)
    max_text_chars: int = 400  # text to speak (/v1/speech, /v1/generate's text), after stripping
    max_stream_s: float = 600.0  # audio over one WebSocket stream
    max_chunk_kb: int = 256  # one WebSocket binary message
    max_image_pixels: int = 40_000_000  # width × height of a photo
    min_image_side: int = 64  # smaller photos cannot hold a trackable face
    max_photo_side: int = 1024  # larger photos are shrunk first (the pasted video's size)
    max_steps: int = 100  # sampler steps a caller may ask for (DDPM is not offered)


class StreamOptions(StrictConfig):
    """The low-latency window of ``/v1/stream`` (offline generation keeps the generator's 160/20).

    Frame 0 is out once ``first_hop + look_ahead + margin`` frames of audio have arrived, plus one
    window's compute: first_hop 4 at 25 fps → 0.16 s + 0.16 s of audio. Later windows make
    ``hop`` = window − prefix frames each (8: half the calls of hop 4, so two streams per replica
    keep up).
    """

    window: int = 16  # frames per denoiser call
    prefix: int = 8  # of them carried over from the previous call (hop = window − prefix)
    first_hop: int | None = 4  # new frames of the first call (None: hop)
    steps: int = DEFAULT_STEPS  # DDIM steps per window
    jpeg_quality: int = 80
    sample_rates: list[int] = [8000, 16000, 22050, 24000, 32000, 44100, 48000]
    # a session (serve.stream.session): timeouts close 4408, audio too far ahead 4413, caps 1013
    start_timeout_s: float = 5.0  # the start message (with the key, unless in the header) must come
    idle_timeout_s: float = 30.0  # no message for this long
    max_session_s: float = 660.0  # wall clock of one stream (limits.max_stream_s of audio + slack)
    ahead_s: float = 2.0  # audio goes to the generator at most this far ahead of real time
    max_buffer_s: float = 10.0  # audio held for a stream: past it 4413 (client too fast) or 1013
    max_streams: int = 16  # open streams per ingress replica
    max_streams_per_client: int = 4  # ... per client address


class BatchingOptions(StrictConfig):
    """Windows of concurrent streams and ``/v1/generate`` requests on one generator replica
    sampled as one batch (:mod:`disenttalk.generate.batching`): each gets the frames it gets alone."""

    enabled: bool = True
    max_batch: int = 16  # windows per batch
    wait_ms: float = 2.0  # once a window is ready, wait this long for others to join its batch


class PortraitStoreOptions(StrictConfig):
    """Where every Portraits replica finds uploaded photos by portrait id (:mod:`serve.store`)."""

    uri: str | None = None  # a folder or s3://bucket/prefix; None: <workspace>/serve/portraits
    max_mb: float = 2048.0  # bytes of photos kept; past it the oldest go, or new uploads get 503
    max_age_h: float = 24.0  # a photo is kept this long after its upload (a re-upload refreshes it)
    keep_s: float = 600.0  # never removed to make room while younger than this
    sweep_s: float = 30.0  # each replica lists the store at most this often to enforce the bounds


class ServeConfig(StrictConfig):
    """``disenttalk serve`` / ``serve.app:build``: the whole application."""

    model_uri: str = CHAMPION_URI
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    # web pages allowed to call the API (serve.origins): null = the server's own page and loopback
    # pages on any port; a list = the server's own page and these ("scheme://host[:port]", "*")
    origins: list[str] | None = None
    steps: int = DEFAULT_STEPS  # /v1/generate default DDIM steps (quadratic spacing)
    portrait_cache: int = 128  # prepared portraits cached per replica (LRU; the store is shared)
    portrait_store: PortraitStoreOptions = PortraitStoreOptions()
    video_preset: str = "veryfast"  # libx264 preset of /v1/generate's mp4 (medium: ~2.3× slower, same size)
    # SIGTERM / Ctrl-C → exit within this (serve.shutdown): in-flight requests and streams get all
    # but 6 s of it, then close (streams: 1001); every deployment's graceful_shutdown_timeout_s
    shutdown_grace_s: float = 20.0
    limits: Limits = Limits()
    stream: StreamOptions = StreamOptions()
    batching: BatchingOptions = BatchingOptions()
    # what runs the denoiser's sampler steps (disenttalk.model.fast): eager PyTorch; onnx (ONNX
    # Runtime); auto (ONNX Runtime on one thread per part of a window's rows: on one thread, as
    # a replica of under 2 CPUs runs, onnx; on N threads the rows split N ways and run side by
    # side); compiled (torch.compile, tens of seconds per new window shape)
    hot_path: Literal["eager", "onnx", "auto", "compiled"] = "auto"
    ingress: DeploymentOptions = DeploymentOptions(
        max_ongoing_requests=32, max_queued_requests=64, ray_actor_options=ActorOptions(num_cpus=0.1))
    portraits: DeploymentOptions = DeploymentOptions(ray_actor_options=ActorOptions(num_cpus=0.5))
    generator: DeploymentOptions = DeploymentOptions()
    # `disenttalk serve` only. Request bodies (which Serve's proxy stops reading past the
    # largest a route takes), audio and videos up to 64 MB pass between the proxy and the
    # replicas inside the calls, not through the object store: a replica's RSS then stays its
    # own memory over a long run (RayConfig.inline_object_kb). Ray's metrics are off: the
    # ingress would keep growing with every generator replica autoscaling starts.
    ray: RayConfig = RayConfig(progress_bars=False, inline_object_kb=65536, metrics=False)


def deployment_options(opts: DeploymentOptions) -> dict[str, Any]:
    """``Deployment.options(**...)`` keywords for one deployment section."""
    out: dict[str, Any] = {
        "max_ongoing_requests": opts.max_ongoing_requests,
        "max_queued_requests": opts.max_queued_requests,
        "ray_actor_options": opts.ray_actor_options.to_dict(),
    }
    if opts.autoscaling is not None:
        auto = {k: v for k, v in opts.autoscaling.to_dict().items() if v is not None}
        out["autoscaling_config"] = auto
    else:
        out["num_replicas"] = opts.num_replicas
    return out
