"""Kubernetes manifests: rendered for a real spec and version, checked against the Kubernetes API's own
schema (strict: unknown fields fail), and held to the properties a safe rollout depends on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from conveyor.config import load_spec
from conveyor.deploy import kubernetes as k8s
from conveyor.deploy.kubernetes import KubernetesRenderError

pytestmark = pytest.mark.unit

IMAGE = "ghcr.io/acme/conveyor-model-server:0.1.0"
AIRFLOW_IMAGE = "ghcr.io/acme/conveyor-airflow:0.1.0"
DIGEST = "sha256:" + "0123456789abcdef" * 4
# The target release, and the newest one the pinned validator ships (catches removed fields early).
VERSIONS = (k8s.KUBERNETES_VERSION, "1.37")
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


@pytest.fixture(scope="module")
def churn() -> Any:
    return load_spec("churn")


@pytest.fixture(scope="module")
def docs(churn: Any) -> list[dict[str, Any]]:
    return k8s.render_model_server(churn, 7, IMAGE, namespace="ml", replicas=2, max_replicas=5)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return k8s.render_training_pod_template(AIRFLOW_IMAGE, namespace="ml")


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _paths(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a document as ``path -> value`` (list items by index)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(_paths(item, f"{prefix}/{key}"))
    return out


# -- schema -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_against_the_kubernetes_schema(
    docs: list[dict[str, Any]], template: dict[str, Any], version: str
) -> None:
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for doc in [*docs, template]:
        assert kubernetes_validate.validate(doc, version, strict=True) == version
    assert k8s.validate_manifests([*docs, template], version) == [
        f"{d['kind']}/{d['metadata']['name']}" for d in [*docs, template]
    ]


def test_the_schema_check_rejects_a_broken_manifest(docs: list[dict[str, Any]]) -> None:
    typo = copy.deepcopy(_kind(docs, "Deployment"))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(typo, k8s.KUBERNETES_VERSION, strict=True)

    wrong_type = copy.deepcopy(_kind(docs, "Service"))
    wrong_type["spec"]["ports"][0]["port"] = "eight thousand"
    nameless_container = copy.deepcopy(_kind(docs, "Deployment"))
    del nameless_container["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(KubernetesRenderError) as raised:
        k8s.validate_manifests([*docs, wrong_type, nameless_container])
    message = str(raised.value)
    assert f"do not validate against Kubernetes {k8s.KUBERNETES_VERSION}" in message
    assert "Service/model-server-churn: spec.ports.0.port" in message
    assert "'name' is a required property" in message

    unknown_kind = {"apiVersion": "conveyor/v1", "kind": "ModelServer", "metadata": {"name": "x"}}
    with pytest.raises(KubernetesRenderError, match="Couldn't find schema for kind ModelServer"):
        k8s.validate_manifests([unknown_kind])


# -- rollout safety ---------------------------------------------------------------------------------


def test_rollouts_never_take_a_serving_pod_away_first(docs: list[dict[str, Any]]) -> None:
    deployment = _kind(docs, "Deployment")["spec"]
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert "replicas" not in deployment, "the autoscaler owns the replica count"
    hpa = _kind(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "model-server-churn",
    }
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert _kind(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_readiness_is_the_golden_row_check_and_liveness_is_not(docs: list[dict[str, Any]]) -> None:
    container = _container(docs)
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/health/ready",
        "port": "http",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health/live"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "TensorFlow imports slowly"
    assert container["ports"] == [
        {"name": "http", "containerPort": k8s.SERVER_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": k8s.GRPC_PORT, "protocol": "TCP"},
    ]
    assert container["command"][container["command"].index("--port") + 1] == str(k8s.SERVER_PORT)


def test_the_routes_the_probes_use_exist_in_the_server(tmp_path: Path) -> None:
    from conveyor.serving.app import create_app
    from conveyor.settings import Settings

    app = create_app(Settings(home=tmp_path, specs_dir=tmp_path / "no-specs"))
    routes = {getattr(route, "path", "") for route in app.routes}
    assert {"/health/ready", "/health/live", "/metrics"} <= routes


def test_a_new_version_changes_only_the_pod_template_and_version_labels(churn: Any) -> None:
    v7 = k8s.render_model_server(churn, 7, IMAGE)
    v8 = k8s.render_model_server(churn, "8", IMAGE)
    dep7, dep8 = _kind(v7, "Deployment"), _kind(v8, "Deployment")
    assert dep7["spec"]["selector"] == dep8["spec"]["selector"], "selectors are immutable"
    assert dep7["spec"]["template"] != dep8["spec"]["template"], "a new version must roll the pods"
    labels8 = dep8["spec"]["template"]["metadata"]["labels"]
    assert labels8[k8s.VERSION_LABEL] == "8" and labels8[k8s.MODEL_LABEL] == "churn"
    annotations8 = dep8["spec"]["template"]["metadata"]["annotations"]
    assert annotations8[k8s.MODEL_URI_ANNOTATION] == "models:/conveyor-churn/8"
    assert _env(_container(v8))["CONVEYOR_PINNED_VERSIONS"]["value"] == "churn=8"

    before = {f"{d['kind']}{p}": v for d in v7 for p, v in _paths(d).items()}
    after = {f"{d['kind']}{p}": v for d in v8 for p, v in _paths(d).items()}
    assert before.keys() == after.keys()
    changed = sorted(p for p in before if before[p] != after[p])
    assert changed and all(
        p.endswith((k8s.VERSION_LABEL, k8s.MODEL_URI_ANNOTATION)) or "/env/" in p for p in changed
    ), changed


def test_the_server_serves_only_its_model_at_the_pinned_version(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.settings import Settings

    for entry in _container(docs)["env"]:
        if "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
    settings = Settings()
    assert settings.serve_models == ("churn",)
    assert settings.pinned_versions == {"churn": "7"}
    assert str(settings.home) == k8s.HOME_DIR


def test_the_admin_token_comes_from_a_secret_never_inline(docs: list[dict[str, Any]]) -> None:
    token = _env(_container(docs))["CONVEYOR_MODEL_SERVER_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"] == {"secretKeyRef": {"name": "conveyor-model-server", "key": "token"}}
    for doc in docs:
        for path, value in _paths(doc).items():
            if path.endswith("/name") and "/env/" in path and any(w in str(value) for w in SECRET_WORDS):
                assert path.replace("/name", "/value") not in _paths(doc), f"{value} is inline"
    env_from = _container(docs)["envFrom"]
    assert {"configMapRef": {"name": "conveyor-settings"}} in env_from
    assert {"secretRef": {"name": "conveyor-mlflow-auth", "optional": True}} in env_from


def test_selectors_of_service_pdb_and_hpa_match_the_deployment(docs: list[dict[str, Any]]) -> None:
    deployment = _kind(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert k8s.VERSION_LABEL not in selector, (
        "a version in the selector would make the next version a new app"
    )
    assert _kind(docs, "Service")["spec"]["selector"] == selector
    assert _kind(docs, "PodDisruptionBudget")["spec"]["selector"] == {"matchLabels": selector}
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["labelSelector"] == {"matchLabels": selector}
    names = {d["metadata"]["name"] for d in docs}
    assert names == {"model-server-churn"}
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}


def test_the_server_has_no_kubernetes_api_access_and_runs_locked_down(docs: list[dict[str, Any]]) -> None:
    assert not {d["kind"] for d in docs} & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    account = _kind(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    pod = _kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    security = _container(docs)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", k8s.HOME_DIR):
        assert "emptyDir" in volumes[mounts[path]], f"{path} must be writable"
    resources = _container(docs)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_pods_are_scraped_by_prometheus_and_say_what_they_serve(docs: list[dict[str, Any]]) -> None:
    meta = _kind(docs, "Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"]["prometheus.io/scrape"] == "true"
    assert meta["annotations"]["prometheus.io/port"] == str(k8s.SERVER_PORT)
    assert meta["annotations"]["prometheus.io/path"] == "/metrics"
    assert meta["annotations"][k8s.REGISTERED_MODEL_ANNOTATION] == "conveyor-churn"
    assert meta["labels"][k8s.VERSION_LABEL] == "7"


def test_object_names_never_produce_conveyor_settings_through_service_links(churn: Any) -> None:
    # A Service named conveyor-mlflow would give other pods CONVEYOR_MLFLOW_PORT=tcp://...
    for model, expected in (
        ("mlflow", "model-server-mlflow"),
        ("breast_cancer", "model-server-breast-cancer"),
    ):
        spec = churn.model_copy(update={"name": model})
        names = {d["metadata"]["name"] for d in k8s.render_model_server(spec, 1, IMAGE)}
        assert names == {expected}
        assert not expected.upper().replace("-", "_").startswith("CONVEYOR_")


# -- inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("ghcr.io/acme/conveyor", "has no tag"),
        ("localhost:5000/conveyor", "has no tag"),
        ("conveyor", "has no tag"),
        ("ghcr.io/acme/conveyor:latest", "'latest' tag"),
        ("conveyor:Latest", "'latest' tag"),
        ("ghcr.io/Acme/conveyor:1.0", "not an image reference"),
        ("conveyor:1.0 ", "not an image reference"),
        ("", "not an image reference"),
        ("conveyor@sha256:abc", "not an image reference"),
    ],
)
def test_images_must_name_an_immutable_build(churn: Any, image: str, why: str) -> None:
    with pytest.raises(KubernetesRenderError, match=why):
        k8s.render_model_server(churn, 7, image)
    with pytest.raises(KubernetesRenderError, match=why):
        k8s.render_training_pod_template(image)


@pytest.mark.parametrize(
    "image",
    [IMAGE, "localhost:5000/conveyor:abc123", f"conveyor@{DIGEST}", f"registry.example.com/a/b:1.2@{DIGEST}"],
)
def test_tagged_and_digest_pinned_images_are_accepted(churn: Any, image: str) -> None:
    assert _container(k8s.render_model_server(churn, 7, image))["image"] == image


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "champion"}, "not a registry version number"),
        ({"version": 0}, "not a registry version number"),
        ({"version": "7.1"}, "not a registry version number"),
        ({"namespace": "ML_Team"}, "not a valid Kubernetes namespace"),
        ({"token_secret": k8s.SecretKey("Bad_Name", "token")}, "not a valid Kubernetes object name"),
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"replicas": 3, "max_replicas": 2}, "below replicas"),
        ({"target_cpu_utilization": 150}, "percentage"),
        ({"extra_env": {"BAD-NAME": "x"}}, "not an environment variable name"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(churn: Any, kwargs: dict[str, Any], message: str) -> None:
    options = {"version": 7, **kwargs}
    version = options.pop("version")
    with pytest.raises(KubernetesRenderError, match=message):
        k8s.render_model_server(churn, version, IMAGE, **options)


def test_a_model_without_a_spec_is_a_clear_error() -> None:
    with pytest.raises(KubernetesRenderError, match="no model spec 'nope'"):
        k8s.render_model_server("nope", 7, IMAGE)


def test_rendering_is_deterministic_and_round_trips_through_yaml(churn: Any) -> None:
    first = k8s.to_yaml(k8s.render_model_server("churn", 7, IMAGE, extra_env={"B": "2", "A": "1"}))
    second = k8s.to_yaml(k8s.render_model_server(churn, "7", IMAGE, extra_env={"A": "1", "B": "2"}))
    assert first == second
    assert first.startswith("---\napiVersion: v1\nkind: ServiceAccount\n")
    assert first.count("\n---\n") == 4
    assert list(yaml.safe_load_all(first)) == k8s.render_model_server(
        churn, 7, IMAGE, extra_env={"A": "1", "B": "2"}
    )
    assert "conveyor/model-version: '7'" in first, "label values stay strings"


# -- training pod template --------------------------------------------------------------------------


def test_the_training_pod_template_has_the_container_airflow_expects(template: dict[str, Any]) -> None:
    assert template["kind"] == "Pod"
    (container,) = template["spec"]["containers"]
    assert container["name"] == "base", "Airflow's KubernetesExecutor and KubernetesPodOperator need 'base'"
    assert container["image"] == AIRFLOW_IMAGE
    assert "command" not in container and "args" not in container, "Airflow supplies the command"
    assert container["envFrom"] == [
        {"configMapRef": {"name": "conveyor-settings"}},
        {"secretRef": {"name": "conveyor-mlflow-auth", "optional": True}},
    ]
    assert set(container["resources"]) == {"requests", "limits"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    # Airflow writes airflow.cfg under AIRFLOW_HOME when the image has none: writable unless asked.
    assert security["readOnlyRootFilesystem"] is False
    spec = template["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", k8s.HOME_DIR, k8s.AIRFLOW_LOGS_DIR} <= mounts
    assert "HOME" not in _env(container), "the Airflow image finds its packages under HOME"
    locked = k8s.render_training_pod_template(
        AIRFLOW_IMAGE, service_account="conveyor-training", read_only_root_filesystem=True
    )
    assert locked["spec"]["serviceAccountName"] == "conveyor-training"
    assert locked["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    k8s.validate_manifests([locked])


def test_airflow_builds_a_valid_worker_pod_from_the_template(template: dict[str, Any]) -> None:
    import datetime as dt

    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient

    base = PodGenerator.deserialize_model_dict(copy.deepcopy(template))
    pod = PodGenerator.construct_pod(
        dag_id="conveyor_train_churn",
        task_id="train",
        pod_id="conveyor-train-churn-train",
        try_number=1,
        kube_image=AIRFLOW_IMAGE,
        date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        args=["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}"],
        pod_override_object=None,
        base_worker_pod=base,
        namespace="ml",
        scheduler_job_id="1",
        run_id="manual__2026-01-01",
    )
    worker = ApiClient().sanitize_for_serialization(pod)
    (container,) = worker["spec"]["containers"]
    assert container["name"] == "base" and container["args"][0] == "python"
    env = {e["name"] for e in container["env"]}
    assert {"AIRFLOW_IS_K8S_EXECUTOR_POD", "CONVEYOR_HOME", "KERAS_HOME"} <= env
    assert container["envFrom"] == template["spec"]["containers"][0]["envFrom"]
    assert worker["spec"]["securityContext"] == template["spec"]["securityContext"]
    assert worker["metadata"]["labels"]["app.kubernetes.io/name"] == k8s.TRAINING_APP_NAME
    k8s.validate_manifests([worker])


# -- CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_prints_the_model_server_manifests(runner: CliRunner) -> None:
    from conveyor.cli import app

    result = runner.invoke(app, ["k8s", "render", "--model", "churn", "--version", "7", "--image", IMAGE])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs == k8s.render_model_server("churn", 7, IMAGE)
    assert "Pod" not in {d["kind"] for d in docs}, "a pod template on stdout would be applied as a pod"


def test_cli_writes_both_files_and_checks_them(runner: CliRunner, tmp_path: Path) -> None:
    from conveyor.cli import app

    args = ["k8s", "render", "--model", "churn", "--version", "7", "--image", IMAGE, "--namespace", "ml"]
    result = runner.invoke(
        app,
        [*args, "--replicas", "3", "--training-image", AIRFLOW_IMAGE, "--out", str(tmp_path), "--validate"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model-server-churn.yaml",
        "training-pod-template.yaml",
    ]
    assert f"schema-checked against Kubernetes {k8s.KUBERNETES_VERSION}" in result.output
    server = list(yaml.safe_load_all((tmp_path / "model-server-churn.yaml").read_text()))
    assert _kind(server, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    assert {d["metadata"]["namespace"] for d in server} == {"ml"}
    (template,) = yaml.safe_load_all((tmp_path / "training-pod-template.yaml").read_text())
    assert template["spec"]["containers"][0]["name"] == "base"
    assert template["spec"]["containers"][0]["image"] == AIRFLOW_IMAGE
    assert template["metadata"]["namespace"] == "ml"

    server_only = tmp_path / "server-only"
    assert runner.invoke(app, [*args, "--out", str(server_only)]).exit_code == 0
    assert [p.name for p in server_only.iterdir()] == ["model-server-churn.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "churn", "--version", "7", "--image", "ghcr.io/acme/conveyor:latest"], "'latest' tag"),
        (["--model", "churn", "--version", "7", "--image", "ghcr.io/acme/conveyor"], "has no tag"),
        (["--model", "churn", "--version", "champion", "--image", IMAGE], "not a registry version"),
        (["--model", "nope", "--version", "7", "--image", IMAGE], "no model spec 'nope'"),
        (
            ["--model", "churn", "--version", "7", "--image", IMAGE, "--training-image", "airflow"],
            "--training-image needs --out",
        ),
        (
            ["--model", "churn", "--version", "7", "--image", IMAGE, "--training-image", "a", "--out", "x"],
            "image 'a' has no tag",
        ),
    ],
)
def test_cli_refuses_bad_inputs_with_a_clear_error(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from conveyor.cli import app

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["k8s", "render", *args], terminal_width=400)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [], "nothing is written when rendering fails"
