"""The Grafana dashboard (deploy/grafana/tollgate.json) reads real metrics:
after traffic through the stack (a request let through, refusals), every
series selector of every query matches a series of a live scrape of Envoy's
/stats/prometheus (the filter's metrics and Envoy's own) or of the
sidecar's /metrics, and every metric of the filter and of the sidecar has a
panel. docker-compose.yml's Prometheus scrapes both under the job names the
dashboard queries (tests/dashboard_check.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from compose_check import interpolate
from dashboard_check import dashboard_problems, queried_names, scrape_families
from deploy_check import load_documents
from tollgate_tooling.gateway import Gateway, assert_error

#: The dashboard queries the wasm build's names (``tollgate_*``); Envoy
#: 1.40 shows the native module's as ``envoy_dynamicmodulescustom_tollgate_*``.
pytestmark = pytest.mark.filter_builds("wasm")

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/tollgate.json"


@pytest.fixture(scope="module")
def scrapes(sqlite_gateway: Gateway) -> dict[str, str]:
    """Envoy's and the sidecar's expositions after traffic, by the
    dashboard's job variable."""
    gw = sqlite_gateway
    key = gw.new_key("dashboard")["key"]
    body = b'{"text": "hello dashboard"}'
    assert gw.post(body, key).status_code == 200
    assert_error(gw.post(body, None), 401, "missing_api_key")
    assert_error(gw.post(body, key, gw.token(b"another body")), 401, "body_hash_mismatch")
    # The hot counters reach Envoy's stats on the filter's tick, the usage
    # records the sidecar within a flush: wait for both to show.
    deadline = time.monotonic() + gw.stack.usage_flush_bound_s
    while True:
        envoy = requests.get(gw.stack.envoy_admin + "/stats/prometheus", timeout=10)
        sidecar = requests.get(gw.stack.sidecar_url + "/metrics", timeout=10)
        assert envoy.status_code == sidecar.status_code == 200
        if (re.search(r"^tollgate_requests_allowed\{\} [1-9]", envoy.text, re.M)
                and re.search(r'^tollgate_usage_rows_ingested_total\{result="inserted"\} [1-9]',
                              sidecar.text, re.M)):
            return {"$envoy_job": envoy.text, "$sidecar_job": sidecar.text}
        assert time.monotonic() < deadline, "the traffic did not show in the metrics"
        time.sleep(0.2)


def test_every_query_of_the_dashboard_reads_a_live_metric(scrapes):
    problems = dashboard_problems(DASHBOARD, scrapes)
    assert not problems, "deploy/grafana/tollgate.json:\n" + "\n".join(problems)


def test_every_metric_of_the_filter_and_the_sidecar_has_a_panel(scrapes):
    """A metric added to filter/src/metrics.rs or sidecar/src/metrics.rs
    without a panel fails here (the denial counters are queried together)."""
    names = queried_names(DASHBOARD)
    covered = names | {n.rsplit("_", 1)[0] for n in names
                       if n.endswith(("_bucket", "_sum", "_count"))}
    ours = {f for f in scrape_families(scrapes["$envoy_job"]) if f.startswith("tollgate_")
            and not f.startswith("tollgate_denied_")} | scrape_families(scrapes["$sidecar_job"])
    assert ours, "no tollgate metric in the scrapes"
    missing = sorted(ours - covered)
    assert not missing, f"no panel of deploy/grafana/tollgate.json queries {missing}"


def test_the_check_refuses_a_query_of_a_metric_that_does_not_exist(scrapes, tmp_path: Path):
    """The check bites: one misspelt metric, label value or job, a metric
    without its job, or a query that is not PromQL, and it says which."""
    text = DASHBOARD.read_text()
    for old, new, expected in [
        ("tollgate_key_cache_hit{", "tollgate_key_cache_hits{", "tollgate_key_cache_hits"),
        ('envoy_cluster_name=\\"ai_server\\"', 'envoy_cluster_name=\\"ai-server\\"', "ai-server"),
        ("tollgate_database_errors_total{job=\\\"$sidecar_job\\\"}",
         "tollgate_database_errors_total{job=\\\"$envoy_job\\\"}", "tollgate_database_errors_total"),
        ("tollgate_usage_records_buffered{job=\\\"$envoy_job\\\"}", "tollgate_usage_records_buffered",
         "without a selector"),
        ("sum(rate(tollgate_replay_cas_retries", "sum(rate(tollgate_replay_cas_retries(", "does not parse"),
    ]:
        assert old in text, f"the dashboard changed: update the breakage {old!r}"
        broken = tmp_path / "broken.json"
        broken.write_text(text.replace(old, new, 1))
        problems = dashboard_problems(broken, scrapes)
        assert any(expected in p for p in problems), (old, problems)


def test_compose_prometheus_scrapes_what_the_dashboard_queries():
    compose = load_documents(ROOT / "docker-compose.yml")[0]
    compose = interpolate(compose, {}, [])
    scrape = load_documents_text(compose["configs"]["prometheus"]["content"])
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    dashboard_jobs = {v["name"]: v["query"] for v in
                      json.loads(DASHBOARD.read_text())["templating"]["list"]
                      if v["name"].endswith("_job")}
    assert set(jobs) == set(dashboard_jobs.values()), (jobs, dashboard_jobs)
    envoy = jobs[dashboard_jobs["envoy_job"]]
    sidecar = jobs[dashboard_jobs["sidecar_job"]]
    # Envoy's admin listens on its container's loopback: Prometheus shares
    # Envoy's network namespace to reach it.
    assert envoy["metrics_path"] == "/stats/prometheus"
    assert envoy["static_configs"][0]["targets"] == ["127.0.0.1:9901"]
    assert compose["services"]["prometheus"]["network_mode"] == "service:envoy"
    assert sidecar["metrics_path"] == "/metrics"
    assert sidecar["static_configs"][0]["targets"] == ["sidecar:9000"]
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./deploy/grafana/tollgate.json:") for m in grafana_mounts)


def load_documents_text(text: str):
    from ruamel.yaml import YAML
    return YAML(typ="safe").load(text)
