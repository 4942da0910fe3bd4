"""gunicorn settings of the reference AI server: ``gunicorn -c gunicorn.conf.py app:app``.

Environment:
  AI_SERVER_BIND             address to listen on (default 127.0.0.1:5000)
  AI_SERVER_WORKERS          worker processes (default 2)
  AI_SERVER_THREADS          threads per worker (default 1: sync workers; >1: gthread)
  AI_SERVER_DEBUG_ENDPOINTS  1 to enable /_debug/requests and /_debug/reset
  AI_SERVER_STATE_DIR        where those keep their shared counters; when unset, one
                             temporary directory is made here, before the workers
                             fork, so that every worker shares it
"""

import os
import tempfile

bind = os.environ.get("AI_SERVER_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("AI_SERVER_WORKERS", "2"))
threads = int(os.environ.get("AI_SERVER_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
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
