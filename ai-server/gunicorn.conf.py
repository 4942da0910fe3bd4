"""gunicorn settings of the reference AI server: ``gunicorn -c gunicorn.conf.py app:app``.

Environment:
  AI_SERVER_BIND             address to listen on (default 127.0.0.1:5000)
  AI_SERVER_WORKERS          worker processes (default 2)
  AI_SERVER_THREADS          threads per gthread worker (default 4)
  AI_SERVER_DEBUG_ENDPOINTS  1 to enable /_debug/requests and /_debug/reset
  AI_SERVER_STATE_DIR        where those keep their shared counters; when unset, one
                             temporary directory is made here, before the workers
                             fork, so that every worker shares it
"""

import os
import tempfile

bind = os.environ.get("AI_SERVER_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("AI_SERVER_WORKERS", "2"))
threads = int(os.environ.get("AI_SERVER_THREADS", "4"))
if workers < 1 or threads < 1:
    raise SystemExit("AI_SERVER_WORKERS and AI_SERVER_THREADS must be at least 1")
# gthread workers keep a connection open between requests (sync workers close
# each one after its answer), so Envoy in front reuses its upstream connections
# instead of opening one per request. An idle connection is closed after
# `keepalive` seconds; Envoy's ai_server cluster drops its idle ones sooner
# (envoy/envoy.template.yaml, idle_timeout), so it never sends a request on a
# connection gunicorn is closing.
worker_class = "gthread"
keepalive = 75
timeout = 30
graceful_timeout = 10

# Envoy in front bounds the request head (96 KiB of headers, 100 headers);
# gunicorn's own smaller defaults (4 KiB request line, 8 KiB per header, 100
# fields) would refuse what Envoy let through with a bare, non-JSON 400.
limit_request_line = 0  # unlimited: Envoy bounds it
limit_request_field_size = 96 * 1024
limit_request_fields = 200

accesslog = "/dev/stderr"  # access log on stderr, next to the error log
errorlog = "-"  # stderr
loglevel = os.environ.get("AI_SERVER_LOG_LEVEL", "info")

if os.environ.get("AI_SERVER_DEBUG_ENDPOINTS", "").strip().lower() in ("1", "true", "yes", "on"):
    if not os.environ.get("AI_SERVER_STATE_DIR"):
        os.environ["AI_SERVER_STATE_DIR"] = tempfile.mkdtemp(prefix="ai-server-state-")
