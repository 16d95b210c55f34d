"""Deployment files: Kubernetes manifests valid against the API schemas, compose and image sane."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_RESOURCES = ("nats-values.yaml", "kustomization.yaml")
K8S_FILES = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name not in NOT_RESOURCES)
SERVICES = ("gateway", "pipeline", "billing", "ledger")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_k8s() -> list[dict[str, Any]]:
    return [d for path in K8S_FILES for d in docs(path)]


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_every_service_has_probes_resources_and_graceful_shutdown() -> None:
    deployments = {d["metadata"]["name"]: d for d in all_k8s() if d["kind"] == "Deployment"}
    assert set(deployments) == {f"mina-{s}" for s in SERVICES}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["args"] == [f"services.{name.removeprefix('mina-')}"]


def test_pipeline_and_gateway_autoscale_and_migrations_run_as_a_job() -> None:
    kinds = all_k8s()
    targets = {d["spec"]["scaleTargetRef"]["name"] for d in kinds if d["kind"] == "HorizontalPodAutoscaler"}
    assert targets == {"mina-pipeline", "mina-gateway"}
    job = next(d for d in kinds if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["services.ledger", "migrate"]


def test_nats_values_describe_a_three_node_jetstream_cluster_with_r3_streams() -> None:
    values = yaml.safe_load((DEPLOY / "k8s" / "nats-values.yaml").read_text())
    assert values["config"]["cluster"]["replicas"] == 3
    assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
    config = docs(DEPLOY / "k8s" / "config.yaml")[0]
    assert config["data"]["MMA_STREAM_REPLICAS"] == "3"


def test_compose_runs_migrate_once_then_scalable_services() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "postgres", "migrate", *SERVICES} <= set(services)
    assert services["migrate"]["command"] == ["services.ledger", "migrate"]
    assert "-js" in services["nats"]["command"]
    # images are variables defaulting to the official ones: ${MINA_POSTGRES_IMAGE:-postgres:16}
    assert services["postgres"]["image"].rstrip("}").split(":")[-1] >= "16"
    pipeline = services["pipeline"]
    assert "container_name" not in pipeline and "ports" not in pipeline, "fixed names/ports break --scale"
    assert pipeline["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert {"nats", "pg"} <= set(compose["volumes"])


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file_and_the_scale() -> None:
    """`docker compose config` needs only the client, not an engine."""
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMA_SHOPIFY_")}
    shop = {"MMA_SHOPIFY_STORE_DOMAIN": "shop.myshopify.com", "MMA_SHOPIFY_ADMIN_TOKEN": "shpat_x"}

    def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
                              capture_output=True, text=True, check=False, env=env)

    done = config({**base, **shop})
    assert done.returncode == 0, done.stderr
    no_shop = config(base)  # billing needs a shop: compose refuses to start without one
    assert no_shop.returncode != 0 and "MMA_SHOPIFY_STORE_DOMAIN" in no_shop.stderr


def test_image_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "\nUSER mina" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["python", "-m"]' in text
