"""gunicorn settings of llm-upstream: ``gunicorn -c gunicorn.conf.py llm_upstream.app:app``
(run in llm-upstream/).

Environment:
  LLM_UPSTREAM_BIND      address to listen on (default 127.0.0.1:5100)
  LLM_UPSTREAM_WORKERS   worker processes (default 2)
  LLM_UPSTREAM_THREADS   threads per gthread worker (default 16): a slow or
                         paced stream holds one thread for its whole length
"""

import os

bind = os.environ.get("LLM_UPSTREAM_BIND", "127.0.0.1:5100")
workers = int(os.environ.get("LLM_UPSTREAM_WORKERS", "2"))
threads = int(os.environ.get("LLM_UPSTREAM_THREADS", "16"))
if workers < 1 or threads < 1:
    raise SystemExit("LLM_UPSTREAM_WORKERS and LLM_UPSTREAM_THREADS must be at least 1")
# gthread: each chunk a streamed answer yields is written to the socket at
# once (no buffering), and connections are kept alive for Envoy to reuse;
# Envoy's llm_upstream cluster closes an idle one sooner (60 s) than
# gunicorn's keepalive, as for the ai-server.
worker_class = "gthread"
keepalive = 75
# gthread workers heartbeat from their main loop, so a long stream on a
# thread does not trip this.
timeout = 30
graceful_timeout = 5

limit_request_line = 0
limit_request_field_size = 96 * 1024
limit_request_fields = 200

accesslog = "/dev/stderr"
errorlog = "-"
loglevel = os.environ.get("LLM_UPSTREAM_LOG_LEVEL", "info")
