"""Ray Serve application: HTTP + WebSocket talking-face generation (``serve run serve.app:build``)."""
