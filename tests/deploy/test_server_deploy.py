"""deploy/ against a real Prefect server: pools, `prefect deploy --all`, schedule, trigger, a worker run.

The scenario itself (server, pools, deploy, worker, translate run, triggered evaluate run) is the
session fixture ``deployed`` in conftest.py; these tests check what it left on the server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim2real.flows.events import EVALUATE_LABEL, VERSION_CREATED
from sim2real.storage.versions import DatasetStore

from .conftest import REPO, Server

pytestmark = pytest.mark.slow
DEPLOY = REPO / "deploy"
EXPECTED = {
    "ingest/ingest": "cpu",
    "train-translator/train-translator": "gpu",
    "translate/translate": "gpu",
    "retrain-and-evaluate/retrain-and-evaluate": "gpu",
    "nightly/nightly": "gpu",
    "promote/promote": "cpu",
}


def test_prefect_yaml_has_a_deployment_per_flow() -> None:
    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    assert spec["pull"] == []  # dotted entrypoints into the installed package: no code pull
    names = {f"{d['entrypoint'].rsplit('.', 1)[-1]}" for d in spec["deployments"]}
    assert names == {
        "ingest_flow",
        "train_translator_flow",
        "translate_flow",
        "retrain_and_evaluate",
        "nightly_flow",
        "promote_flow",
    }


def test_nightly_parameters_validate_against_the_flow_schema() -> None:
    from sim2real.flows.nightly import NightlyParams

    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    params = NightlyParams.model_validate(nightly["parameters"]["params"])
    assert params.translate.engine.compile and params.profile == "full"


def test_deployments_schedule_and_concurrency_on_the_server(
    deployed: dict[str, Any], prefect_server: Server
) -> None:
    with prefect_server.client() as client:
        deployments = {name: client.read_deployment_by_name(name) for name in EXPECTED}
        pools = {name: client.read_work_pool(name) for name in ("cpu", "gpu")}
    assert {name: d.work_pool_name for name, d in deployments.items()} == EXPECTED
    nightly = deployments["nightly/nightly"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [
        ("0 2 * * *", "Europe/Berlin", True)
    ]
    assert nightly.parameter_openapi_schema["properties"]["params"]  # the pydantic form
    assert nightly.global_concurrency_limit is not None and nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert deployments["retrain-and-evaluate/retrain-and-evaluate"].global_concurrency_limit.limit == 1
    assert pools["cpu"].type == "process" and pools["cpu"].concurrency_limit == 4
    assert pools["gpu"].concurrency_limit == 1
    with prefect_server.client() as client:
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1


def test_event_trigger_is_registered(deployed: dict[str, Any], prefect_server: Server) -> None:
    with prefect_server.client() as client:
        automations = [
            a
            for a in client.read_automations()
            if any(
                getattr(action, "deployment_id", None) == deployed["evaluate_deployment_id"]
                for action in a.actions
            )
        ]
    assert len(automations) == 1
    trigger = automations[0].trigger
    assert trigger.expect == {VERSION_CREATED}
    assert trigger.match.root[EVALUATE_LABEL] == "trigger"
    (action,) = automations[0].actions
    assert action.parameters == {"extras": ["{{ event.payload.ref }}"], "root": "{{ event.payload.root }}"}


def test_worker_run_completes_and_its_event_triggers_evaluation(deployed: dict[str, Any]) -> None:
    translate, evaluate = deployed["translate_run"], deployed["evaluate_run"]
    assert translate.state.is_completed() and evaluate.state.is_completed()
    (translated,) = DatasetStore(deployed["root"]).list_versions("sim-translated")
    assert translated.info["source"] == deployed["refs"]["sim"]
    assert evaluate.parameters["extras"] == [translated.ref]  # from the event payload
    assert evaluate.parameters["root"] == deployed["root"]
    assert evaluate.parameters["profile"] == "tiny"
    assert evaluate.created > translate.created


@pytest.mark.parametrize("template", ["gpu-kubernetes.json", "gpu-docker.json"])
def test_gpu_job_templates_register_on_the_server(template: str, prefect_server: Server) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    pool_type = template.removeprefix("gpu-").removesuffix(".json")
    base = json.loads(Path(DEPLOY / "pools" / template).read_text())
    with prefect_server.client() as client:
        pool = client.create_work_pool(
            WorkPoolCreate(name=f"check-{pool_type}", type=pool_type, base_job_template=base), overwrite=True
        )
    text = json.dumps(pool.base_job_template)
    if pool_type == "kubernetes":
        container = pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
        assert pool.base_job_template["variables"]["properties"]["gpu_count"]["default"] == 1
    else:
        kwargs = pool.base_job_template["variables"]["properties"]["container_create_kwargs"]["default"]
        assert kwargs["device_requests"][0]["capabilities"] == [["gpu"]]
    assert "sim2real-worker" in text


def test_compose_and_dockerfile_fit_together() -> None:
    """No Docker here: check the files agree (image name, roles, build inputs that exist)."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "server", "worker-cpu", "worker-gpu", "bootstrap"} <= set(services)
    assert (
        "postgresql+asyncpg://" in services["server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    )
    assert "PREFECT_SERVER_API_AUTH_STRING" in services["server"]["environment"]
    gpu = services["worker-gpu"]
    assert gpu["command"][:5] == ["prefect", "worker", "start", "--pool", "gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["worker-cpu"]["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", dockerfile, re.M)
    copied = [src for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for src in line.split()[:-1]]
    assert "pyproject.toml" in copied and "flows" in copied
    for source in copied:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert compose["x-sim2real-image"]["build"]["dockerfile"] == "deploy/Dockerfile"
