"""Offline checks of deploy/: Prometheus config and rules (promtool), Kubernetes manifests (schemas
bundled with kubernetes-validate; structural checks for the KEDA and Prometheus Operator objects),
docker-compose references, and the metric names the dashboard and rules use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sysdeps
import yaml

from archive import metrics as am
from workers import exporter
from workers import metrics as wm
from workers.contract import DEFAULT_QUEUE, JOB_TIMEOUT_S

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
             ("monitoring.coreos.com/v1", "ServiceMonitor")}
METRICS_PORT = 9464


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = sysdeps.binary("promtool", hint="bash .ci/install-system-deps.sh installs Debian's prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ("check", "config", "prometheus/prometheus.yml"),
    ("check", "rules", "prometheus/alerts.yml"),
    ("test", "rules", "prometheus/alerts_test.yml"),
], ids=["config", "rules", "rules-unit-tests"])
def test_promtool(args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DEPLOY)
    proc = _promtool(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _find(kind: str, name: str) -> dict[str, Any]:
    hits = [d for _, d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def test_core_manifests_match_bundled_schemas() -> None:
    import kubernetes_validate

    checked = 0
    for filename, doc in _k8s_docs():
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{filename} {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, err.path))}: {err.message}")
        checked += 1
    assert checked >= 6


def test_crd_objects_are_well_formed() -> None:
    seen = set()
    for _, doc in _k8s_docs():
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRD_KINDS:
            continue
        seen.add(key)
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == "ser"
        assert isinstance(doc["spec"], dict)
    assert seen == CRD_KINDS

    so = _find("ScaledObject", "ser-worker")["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ser-worker"}
    assert 0 <= so["minReplicaCount"] <= so["maxReplicaCount"]
    (trigger,) = so["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == exporter.queue_key(DEFAULT_QUEUE) == "rq:queue:ser"
    assert int(trigger["metadata"]["listLength"]) > 0
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA metadata is map[string]string
    assert trigger["metadata"]["address"].startswith("redis.ser.svc")
    auth = _find("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    for ref in auth["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"} and ref["name"] == "ser-redis"

    sm = _find("ServiceMonitor", "ser-worker")["spec"]
    svc = _find("Service", "ser-worker-metrics")
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["endpoints"][0]["path"] == "/metrics"


def test_worker_deployment_wiring() -> None:
    dep = _find("Deployment", "ser-worker")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > JOB_TIMEOUT_S
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert c["args"] == ["--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0"]  # scraped from outside
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    # SER_REDIS_URL only from a Secret; no credentials anywhere in the manifests.
    env = {e["name"]: e for e in c["env"]}
    assert env["SER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "ser-redis", "key": "url"}
    assert _find("ConfigMap", "ser-worker")["data"]["SER_QUEUE"] == DEFAULT_QUEUE
    for _, doc in _k8s_docs():
        assert doc["kind"] != "Secret", "Secrets are created out of band (deploy/README.md)"
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert not re.search(r"redis://[^\s\"']*:[^\s\"'@]+@", text), "a Redis URL with a password in a manifest"


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    kubectl = shutil.which("kubectl")
    if kubectl:  # kustomize build runs offline
        proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert len([d for d in yaml.safe_load_all(proc.stdout) if d]) == len(_k8s_docs())


def test_compose_file_references_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert "name" not in compose and "version" not in compose  # docker-compose 1.29 rejects a top-level name
    services = compose["services"]
    assert {"redis", "worker", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file(), name
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                if source == "../runs":  # created by the trainer on first run
                    continue
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    worker = services["worker"]
    assert "--metrics-port" in worker["command"]
    assert str(METRICS_PORT) in worker["command"] and str(METRICS_PORT) in worker["expose"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "ser-worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"] and job["dns_sd_configs"][0]["port"] == METRICS_PORT


def test_dockerfiles() -> None:
    worker = (DEPLOY / "Dockerfile.worker").read_text()
    trainer = (DEPLOY / "Dockerfile.trainer").read_text()
    for text in (worker, trainer):
        assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text  # deploy/build-local.sh overrides it
        assert "# syntax=" not in text  # that line makes every build pull the dockerfile frontend image
    worker_runs = "\n".join(line for line in worker.splitlines() if line.startswith("RUN"))
    assert re.search(r"pip install \.\s", worker_runs)
    assert "[train]" not in worker_runs and "tensorflow" not in worker_runs.lower()
    assert 'pip install ".[train]"' in trainer
    assert 'ENTRYPOINT ["ser-worker"]' in worker and 'ENTRYPOINT ["ser-train"]' in trainer
    build = (DEPLOY / "build-local.sh").read_text()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for entry, port in (("gateway", 8080), ("dashboard", 8090)):  # every serving entry point has its image
        text = (DEPLOY / f"Dockerfile.{entry}").read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text and "# syntax=" not in text
        runs = "\n".join(line for line in text.splitlines() if line.startswith("RUN"))
        assert re.search(r"pip install \.\s", runs) and "[train]" not in runs
        assert f'ENTRYPOINT ["ser-{entry}"]' in text and f"EXPOSE {port}" in text and "USER 10001" in text
        assert f"-f deploy/Dockerfile.{entry} -t ser-{entry}:0.1.0" in build
        assert compose[entry]["build"]["dockerfile"] == f"deploy/Dockerfile.{entry}"
        assert compose[entry]["image"] == f"ser-{entry}:0.1.0"
        deployment = _find("Deployment", f"ser-{entry}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"ser-{entry}:0.1.0" and container["ports"][0]["containerPort"] == port
    dash = _find("Deployment", "ser-dashboard")["spec"]["template"]["spec"]["containers"][0]
    dash_env = {e["name"]: e for e in dash["env"]}
    assert dash_env["SER_DASHBOARD_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ser-dashboard"


_NAME_RE = re.compile(r"\b(ser_[a-z0-9_]+)")
_RECORD_RE = re.compile(r"\b(ser:[a-z0-9_:]+)")


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_dashboard_and_rules_use_only_defined_metrics() -> None:
    defined = wm.sample_names() | am.sample_names()
    recorded = {r["record"] for r in _alert_rules() if "record" in r}
    dash = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10 and all(p.get("datasource", {}).get("uid") == "prometheus" for p in dash["panels"])
    used = set()
    for expr in exprs + [r["expr"] for r in _alert_rules()]:
        names = set(_NAME_RE.findall(expr))
        assert names <= defined, f"undefined metric(s) {names - defined} in {expr!r}"
        assert set(_RECORD_RE.findall(expr)) <= recorded, expr
        used |= names
    # The dashboard shows what the brief asks for.
    joined = "\n".join(exprs)
    for needle in ("ser_segments_total", "ser_end_to_end_seconds_bucket", 'status="ok"', "ser_queue_depth",
                   "ser_worker_busy_seconds_total", "histogram_quantile(0.99"):
        assert needle in joined, needle
    alerts = {r["alert"] for r in _alert_rules() if "alert" in r}
    assert {"SerBacklogGrowing", "SerNoWorkers", "SerHighErrorRate", "SerLatencyBudgetBurnFast",
            "SerLatencyBudgetBurnSlow"} <= alerts
    # The objective's bucket exists in the histogram.
    assert 5.0 in wm.E2E_BUCKETS


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/ser.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboard.json"].startswith(path + "/")
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"


def test_root_dockerignore_sends_only_the_packages() -> None:
    """The classic builder reads only the context root's .dockerignore (not Dockerfile.x.dockerignore):
    without it the quick start's .venv (gigabytes) went into every build context."""
    lines = [ln.strip() for ln in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!models/", "!producer/", "!workers/"} <= set(lines)
    assert not any(ln.startswith("!") and (".venv" in ln or "runs" in ln or "data" in ln) for ln in lines)
    script = (DEPLOY / "build-local.sh").read_text()
    assert "debootstrap" in script and "BASE_IMAGE=" in script and "docker import" in script


def test_gateway_image_compose_and_manifests() -> None:
    text = (DEPLOY / "Dockerfile.gateway").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text and "# syntax=" not in text
    assert 'ENTRYPOINT ["ser-gateway"]' in text and "[train]" not in text.split("RUN", 1)[1]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    gw = compose["services"]["gateway"]
    assert gw["build"]["dockerfile"] == "deploy/Dockerfile.gateway" and gw["ports"] == ["127.0.0.1:8080:8080"]
    assert gw["environment"]["SER_REDIS_URL"] == "redis://redis:6379/0"
    deploy = _find("Deployment", "ser-gateway")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    envs = {e["name"] for e in container["env"]}
    assert {"SER_REDIS_URL", "SER_TWILIO_AUTH_TOKEN", "SER_AUDIOHOOK_API_KEY", "SER_AUDIOHOOK_CLIENT_SECRET",
            "SER_GATEWAY_TOKEN"} <= envs
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert _find("Service", "ser-gateway")["spec"]["selector"] == {"app.kubernetes.io/name": "ser-gateway"}
    ignore = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    assert {"!gateway/", "!callevents/", "!reports/"} <= set(ignore)  # what the gateway imports


ARCHIVE_PORT = 9465


def test_archive_image_compose_and_manifests() -> None:
    """ser-archive: its image, the compose service with PostgreSQL and a volume, the Deployment reading the
    database URL from a mounted Secret (SER_ARCHIVE_URL_FILE), probes and scraping on the metrics port."""
    text = (DEPLOY / "Dockerfile.archive").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text and "# syntax=" not in text
    runs = "\n".join(line for line in text.splitlines() if line.startswith("RUN"))
    assert re.search(r"pip install \.\s", runs) and "[train]" not in runs and "USER 10001" in text
    assert 'ENTRYPOINT ["ser-archive"]' in text and f"EXPOSE {ARCHIVE_PORT}" in text
    assert "-f deploy/Dockerfile.archive -t ser-archive:0.1.0" in (DEPLOY / "build-local.sh").read_text()
    assert "!archive/" in (DEPLOY.parent / ".dockerignore").read_text().splitlines()

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svc, pg = compose["services"]["archive"], compose["services"]["postgres"]
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile.archive" and svc["image"] == "ser-archive:0.1.0"
    assert svc["command"] == ["--metrics-port", str(ARCHIVE_PORT), "--metrics-host", "0.0.0.0"]
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy" and "ports" not in pg
    assert svc["environment"]["SER_ARCHIVE_URL"].startswith("postgresql+psycopg://ser:${SER_ARCHIVE_DB_PASSWORD")
    assert svc["environment"]["SER_ARCHIVE_URL"].endswith("@postgres:5432/ser")
    assert any(v.startswith("archive-data:/var/lib/postgresql/data") for v in pg["volumes"])
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "ser-archive")
    assert job["dns_sd_configs"][0] == {**job["dns_sd_configs"][0], "names": ["archive"], "port": ARCHIVE_PORT}

    dep = _find("Deployment", "ser-archive")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ser-archive:0.1.0" and c["args"] == svc["command"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": ARCHIVE_PORT}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {e["name"]: e for e in c["env"]}
    assert "SER_ARCHIVE_URL" not in env  # the password stays in the Secret's file
    mount = next(m for m in c["volumeMounts"] if env["SER_ARCHIVE_URL_FILE"]["value"].startswith(m["mountPath"]))
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "ser-archive" and vol["secret"]["items"] == [{"key": "url", "path": "url"}]
    assert env["SER_ARCHIVE_URL_FILE"]["value"] == mount["mountPath"] + "/url"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]  # the file is readable
    assert env["SER_ARCHIVE_CONSUMER"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "ser-redis", "key": "url"}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(ARCHIVE_PORT)
    sm = _find("ServiceMonitor", "ser-archive")["spec"]
    labels = _find("Service", "ser-archive-metrics")["metadata"]["labels"]
    assert sm["selector"]["matchLabels"].items() <= labels.items()

    # The lag alert fires well before the results expire from Redis.
    from workers.contract import RESULTS_TTL_S

    rule = next(r for r in _alert_rules() if r.get("alert") == "SerArchiveLagging")
    threshold = float(re.search(r"ser_archive_lag_seconds\)\s*>\s*(\d+)", rule["expr"]).group(1))  # type: ignore[union-attr]
    assert threshold + 60 * int(rule["for"].rstrip("m")) <= RESULTS_TTL_S / 3
