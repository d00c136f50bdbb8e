"""Kubernetes manifests for the model server and the training pods, rendered from one place.

Nothing here talks to a cluster: the functions return plain dicts (one per Kubernetes object) that
:func:`to_yaml` writes as multi-document YAML for ``kubectl apply``, a GitOps repository or Airflow.

* :func:`render_model_server` — one model at one registry version: a ServiceAccount without API
  access, a Deployment (readiness = the server's golden-row check, zero-unavailable rolling update,
  non-root, read-only root filesystem), a Service, a HorizontalPodAutoscaler and a
  PodDisruptionBudget. The version is an input: rendering version 8 instead of 7 changes only the
  pod template (label, annotation, ``CONVEYOR_PINNED_VERSIONS``), which is what rolls the Deployment.
  Pods of a version that fails its golden rows never become ready, so with ``maxUnavailable: 0``
  the pods of the previous version keep serving and the rollout stalls visibly.
* :func:`render_training_pod_template` — a Pod whose container is named ``base``, usable as the
  KubernetesExecutor's ``pod_template_file`` and as a KubernetesPodOperator ``pod_template_dict``.

Rendering is deterministic: the same inputs give byte-identical YAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import PermanentError

if TYPE_CHECKING:
    from conveyor.config import ModelSpec

#: The oldest Kubernetes release the manifests are written for; tests check them against its schema.
KUBERNETES_VERSION = "1.33"

SERVER_PORT = 8000
GRPC_PORT = 8001  # OIP v2 gRPC (KServe / Triton convention); the image listens on 0.0.0.0
SERVER_APP_NAME = "conveyor-model-server"
TRAINING_APP_NAME = "conveyor-training"
#: ``uvicorn`` from the image's environment; the port is the container port below.
SERVER_COMMAND = (
    "uvicorn",
    "conveyor.serving.app:create_app",
    "--factory",
    "--host",
    "0.0.0.0",
    "--port",
    str(SERVER_PORT),
    "--no-access-log",
    "--timeout-graceful-shutdown",
    "20",
)
#: Writable folders on a read-only root filesystem (each an ``emptyDir``).
HOME_DIR = "/var/lib/conveyor"
TMP_DIR = "/tmp"
AIRFLOW_LOGS_DIR = "/opt/airflow/logs"
TRAINING_TEMPLATE_FILE = "training-pod-template.yaml"

MODEL_LABEL = "conveyor/model"
VERSION_LABEL = "conveyor/model-version"
REGISTERED_MODEL_ANNOTATION = "conveyor/registered-model"
MODEL_URI_ANNOTATION = "conveyor/model-uri"

# RFC 1035 labels name Services (a letter first); RFC 1123 labels and subdomains name the rest.
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_RFC1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAMESPACE = re.compile(_RFC1123_LABEL)
_SUBDOMAIN = re.compile(rf"{_RFC1123_LABEL}(\.{_RFC1123_LABEL})*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION = re.compile(r"[1-9][0-9]*")
# The image reference grammar of the OCI distribution spec: [host[:port]/]path[:tag][@digest].
_IMAGE = re.compile(
    r"(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)


class KubernetesRenderError(PermanentError):
    """The inputs cannot give valid, safe manifests (the message says which input and why)."""


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests and limits of one container (Kubernetes quantities)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def to_k8s(self) -> dict[str, Any]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class SecretKey:
    """One key of a Kubernetes Secret."""

    name: str
    key: str


# TensorFlow and a model in memory need about 1 GiB; the limit leaves room for a staged candidate.
SERVER_RESOURCES = Resources(cpu_request="500m", memory_request="1Gi", cpu_limit="2", memory_limit="3Gi")
TRAINING_RESOURCES = Resources(cpu_request="1", memory_request="2Gi", cpu_limit="2", memory_limit="6Gi")
TOKEN_SECRET = SecretKey(name="conveyor-model-server", key="token")
SETTINGS_CONFIG_MAP = "conveyor-settings"
MLFLOW_SECRET = "conveyor-mlflow-auth"
# The user of the official Airflow image, which Conveyor's images share (group 0 owns what they write).
RUN_AS_USER = 50000
RUN_AS_GROUP = 0


def check_image(image: str) -> str:
    """Return ``image`` if it names an immutable build: a tag other than ``latest``, or a digest.

    Raises:
        KubernetesRenderError: no tag and no digest, the ``latest`` tag, or not an image reference.
    """
    match = _IMAGE.fullmatch(image.strip())
    if match is None or image != image.strip():
        raise KubernetesRenderError(
            f"{image!r} is not an image reference; write <registry>/<repository>:<tag> "
            "(e.g. ghcr.io/acme/conveyor:0.1.0) or <repository>@sha256:<digest>"
        )
    tag, digest = match.group("tag"), match.group("digest")
    if tag is not None and tag.lower() == "latest":
        raise KubernetesRenderError(
            f"image {image!r} uses the 'latest' tag, which names a different build over time: a "
            "rollout would not be reproducible and a rollback could not return to the old code; "
            "tag each build (e.g. the git commit or release) or pin its digest"
        )
    if tag is None and digest is None:
        raise KubernetesRenderError(
            f"image {image!r} has no tag, so Kubernetes would pull 'latest'; tag each build "
            "(e.g. the git commit or release) or pin its digest (<repository>@sha256:<digest>)"
        )
    return image


def resource_name(model: str) -> str:
    """The name of a model's Deployment, Service, HPA, PDB and ServiceAccount: ``model-server-<model>``.

    Not ``conveyor-...``: pods that keep Kubernetes' service links get ``<SERVICE>_PORT=tcp://...``
    variables, and ``CONVEYOR_*`` ones would be read as settings (``conveyor-mlflow`` would set
    ``CONVEYOR_MLFLOW_PORT``).
    """
    return _dns_label(f"model-server-{model.replace('_', '-')}", f"model name {model!r}")


def render_model_server(
    spec: ModelSpec | str,
    version: str | int,
    image: str,
    *,
    namespace: str = "conveyor",
    replicas: int = 2,
    max_replicas: int | None = None,
    target_cpu_utilization: int = 70,
    resources: Resources = SERVER_RESOURCES,
    token_secret: SecretKey = TOKEN_SECRET,
    settings_config_map: str = SETTINGS_CONFIG_MAP,
    mlflow_secret: str = MLFLOW_SECRET,
    extra_env: Mapping[str, str] | None = None,
    run_as_user: int = RUN_AS_USER,
    run_as_group: int = RUN_AS_GROUP,
) -> list[dict[str, Any]]:
    """The objects that serve ``version`` of one model: ServiceAccount, Deployment, Service, HPA, PDB.

    The server in the pod serves only this model (``CONVEYOR_SERVE_MODELS``) at exactly this
    version (``CONVEYOR_PINNED_VERSIONS``); non-secret settings (``CONVEYOR_MLFLOW_TRACKING_URI``,
    ``CONVEYOR_DATA_ROOT`` on an object store...) come from the ConfigMap ``settings_config_map``,
    MLflow credentials (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) from the Secret ``mlflow_secret``
    when it exists, and the admin token from ``token_secret``. None of them is rendered here.

    Args:
        spec: the model's spec, or its name under the specs folder.
        version: the registry version to serve (a positive integer).
        image: the model-server image, tagged (not ``latest``) or pinned by digest.
        namespace: where every object lives.
        replicas: the autoscaler's minimum (the Deployment leaves ``replicas`` to the autoscaler).
        max_replicas: the autoscaler's maximum; three times ``replicas`` by default.
        target_cpu_utilization: average CPU, in percent of the request, the autoscaler aims at.
        resources: the server container's requests and limits.
        token_secret: the Secret key holding the admin token (``CONVEYOR_MODEL_SERVER_TOKEN``).
        settings_config_map: the ConfigMap of ``CONVEYOR_*`` settings shared with training pods.
        mlflow_secret: the Secret of MLflow credentials (optional in the pod: absent means none).
        extra_env: more plain environment variables for the server (never secrets).
        run_as_user: the non-root user id the container runs as (``run_as_group`` its group).

    Raises:
        KubernetesRenderError: an input would give an invalid or unsafe manifest.
    """
    spec = _spec(spec)
    version = _version(version)
    image = check_image(image)
    namespace = _namespace(namespace)
    if replicas < 1:
        raise KubernetesRenderError(f"replicas must be at least 1, got {replicas}")
    max_replicas = replicas * 3 if max_replicas is None else max_replicas
    if max_replicas < replicas:
        raise KubernetesRenderError(f"max_replicas ({max_replicas}) is below replicas ({replicas})")
    if not 1 <= target_cpu_utilization <= 100:
        raise KubernetesRenderError(
            f"target_cpu_utilization is a percentage of the CPU request, got {target_cpu_utilization}"
        )
    for secret_name in (token_secret.name, settings_config_map, mlflow_secret):
        _dns_subdomain(secret_name, "Secret/ConfigMap name")

    name = resource_name(spec.name)
    selector = {"app.kubernetes.io/name": SERVER_APP_NAME, "app.kubernetes.io/instance": name}
    labels = {
        **selector,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/managed-by": "conveyor",
        MODEL_LABEL: _label_value(spec.name, "model name"),
        VERSION_LABEL: version,
    }
    model_uri = f"models:/{spec.registered_model_name}/{version}"
    annotations = {REGISTERED_MODEL_ANNOTATION: spec.registered_model_name, MODEL_URI_ANNOTATION: model_uri}

    def metadata(**extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels), **extra}

    env = [
        {"name": "CONVEYOR_SERVE_MODELS", "value": spec.name},
        {"name": "CONVEYOR_PINNED_VERSIONS", "value": f"{spec.name}={version}"},
        *_writable_dirs_env(),
        *_plain_env(extra_env),
        {
            "name": "CONVEYOR_MODEL_SERVER_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret.name, "key": token_secret.key}},
        },
    ]
    container = {
        "name": "model-server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(SERVER_COMMAND),
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "envFrom": _env_from(settings_config_map, mlflow_secret),
        "env": env,
        "resources": resources.to_k8s(),
        # Liveness only says the process answers; it is never gated on models, so a model that
        # fails its golden rows leaves the pod alive and unready instead of restarting it in a loop.
        "startupProbe": _http_probe("/health/live", period=5, timeout=5, failures=60),  # TF: up to 5 min
        "livenessProbe": _http_probe("/health/live", period=10, timeout=5, failures=6),
        # Ready = loaded *and* answered its golden rows with the offline predictions.
        "readinessProbe": _http_probe("/health/ready", period=5, timeout=3, failures=3),
        # Endpoints drop the pod before it gets SIGTERM, so no request lands on a stopping server.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": _container_security(read_only_root=True),
        "volumeMounts": [
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "conveyor-home", "mountPath": HOME_DIR},
        ],
    }
    pod_spec = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        # Service links would inject <SERVICE>_PORT=tcp://... variables for every Service in the
        # namespace; one named conveyor-model-server would set CONVEYOR_MODEL_SERVER_PORT.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 40,
        "securityContext": _pod_security(run_as_user, run_as_group),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
            }
        ],
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            # The model cache (<home>/serving/cache): a few model versions.
            {"name": "conveyor-home", "emptyDir": {"sizeLimit": "4Gi"}},
        ],
    }
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(),
        # The server never calls the Kubernetes API: no token in its pods, and no Role to bind.
        "automountServiceAccountToken": False,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(annotations=dict(annotations)),
        "spec": {
            # No ``replicas``: the HorizontalPodAutoscaler owns the count; a re-apply must not reset it.
            "selector": {"matchLabels": dict(selector)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "minReadySeconds": 10,
            # TensorFlow import + model download + golden rows: a stalled rollout is reported after this.
            "progressDeadlineSeconds": 900,
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        **annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target_cpu_utilization},
                    },
                }
            ],
            # A new pod needs minutes (TensorFlow, golden rows): do not give capacity back too eagerly.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
    disruption_budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": dict(selector)},
            # An unready pod (e.g. a version failing its golden rows) must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    return [service_account, deployment, service, autoscaler, disruption_budget]


def render_training_pod_template(
    image: str,
    *,
    namespace: str = "conveyor",
    resources: Resources = TRAINING_RESOURCES,
    settings_config_map: str = SETTINGS_CONFIG_MAP,
    mlflow_secret: str = MLFLOW_SECRET,
    service_account: str | None = None,
    airflow_logs_dir: str = AIRFLOW_LOGS_DIR,
    extra_env: Mapping[str, str] | None = None,
    run_as_user: int = RUN_AS_USER,
    run_as_group: int = RUN_AS_GROUP,
    read_only_root_filesystem: bool = False,
) -> dict[str, Any]:
    """A Pod for training tasks: the KubernetesExecutor's ``pod_template_file`` or a KubernetesPodOperator's
    ``pod_template_dict``.

    Airflow fills in the pod's name, the command and its own labels; its container must be named
    ``base``. ``image`` is the Airflow image with Conveyor installed (the one that runs the tasks).
    Settings and MLflow credentials come in as ``envFrom`` (the same ConfigMap and Secret as the
    model server). Task logs go to an ``emptyDir`` at ``airflow_logs_dir`` (``$AIRFLOW_HOME/logs``)
    for Airflow's remote logging to ship.

    The root filesystem stays writable unless ``read_only_root_filesystem``: Airflow writes
    ``airflow.cfg`` under ``$AIRFLOW_HOME`` when the image has none, and training libraries write
    caches where they choose. The pod is non-root, without privilege escalation or capabilities.

    Raises:
        KubernetesRenderError: an input would give an invalid or unsafe manifest.
    """
    image = check_image(image)
    namespace = _namespace(namespace)
    for name in (settings_config_map, mlflow_secret, service_account):
        if name is not None:
            _dns_subdomain(name, "ConfigMap/Secret/ServiceAccount name")
    if not airflow_logs_dir.startswith("/"):
        raise KubernetesRenderError(f"airflow_logs_dir must be an absolute path, got {airflow_logs_dir!r}")
    labels = {
        "app.kubernetes.io/name": TRAINING_APP_NAME,
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/managed-by": "conveyor",
    }
    env = [*_writable_dirs_env(), *_plain_env(extra_env)]
    container = {
        "name": "base",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": _env_from(settings_config_map, mlflow_secret),
        "env": env,
        "resources": resources.to_k8s(),
        "securityContext": _container_security(read_only_root=read_only_root_filesystem),
        "volumeMounts": [
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "conveyor-home", "mountPath": HOME_DIR},
            {"name": "airflow-logs", "mountPath": airflow_logs_dir},
        ],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training reads MLflow and the data root, never the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(run_as_user, run_as_group),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "conveyor-home", "emptyDir": {"sizeLimit": "8Gi"}},
            {"name": "airflow-logs", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if service_account is not None:
        spec = {"serviceAccountName": service_account, **spec}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        # Airflow replaces the name; a template still needs one to be a valid Pod.
        "metadata": {"name": "conveyor-training", "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML (``---`` before each object), keys in the order they were rendered."""
    import yaml

    return yaml.safe_dump_all(
        [dict(doc) for doc in docs],
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        width=1000,
    )


def write_manifests(
    out_dir: Path,
    spec: ModelSpec | str,
    version: str | int,
    image: str,
    *,
    training_image: str | None = None,
    **options: Any,
) -> list[Path]:
    """Write ``<out_dir>/model-server-<model>.yaml`` and, given a ``training_image``,
    ``<out_dir>/training-pod-template.yaml`` (one Pod, as ``pod_template_file`` wants it).

    ``options`` go to :func:`render_model_server`; the pod template shares its ``namespace``.
    Everything is rendered before anything is written. Returns the paths written.
    """
    spec = _spec(spec)
    files = {f"{resource_name(spec.name)}.yaml": render_model_server(spec, version, image, **options)}
    if training_image is not None:
        namespace = options.get("namespace", "conveyor")
        files[TRAINING_TEMPLATE_FILE] = [render_training_pod_template(training_image, namespace=namespace)]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, docs in files.items():
        path = out_dir / filename
        path.write_text(to_yaml(docs))
        paths.append(path)
    return paths


def validate_manifests(
    docs: Iterable[Mapping[str, Any]], kubernetes_version: str = KUBERNETES_VERSION
) -> list[str]:
    """Check every object against the Kubernetes API's own schema (strict: unknown fields fail).

    Needs the ``kubernetes-validate`` package (a development dependency). Returns one
    ``kind/name`` line per object checked.

    Raises:
        KubernetesRenderError: an object does not validate, or its kind has no schema in that version.
    """
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - a development dependency, pinned in requirements.txt
        raise KubernetesRenderError(
            "checking manifests needs the kubernetes-validate package (pip install kubernetes-validate)"
        ) from None

    checked: list[str] = []
    problems: list[str] = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(dict(doc), kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top level)"
            problems.append(f"{what}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{what}: {exc.message}")
        else:
            checked.append(what)
    if problems:
        raise KubernetesRenderError(
            f"manifests do not validate against Kubernetes {kubernetes_version}:\n  " + "\n  ".join(problems)
        )
    return checked


# -- pieces ---------------------------------------------------------------------------------------------


def _spec(spec: ModelSpec | str) -> ModelSpec:
    if not isinstance(spec, str):
        return spec
    from conveyor.config import load_spec

    try:
        return load_spec(spec)
    except FileNotFoundError as exc:
        raise KubernetesRenderError(str(exc)) from None


def _version(version: str | int) -> str:
    text = str(version).strip()
    if not _VERSION.fullmatch(text):
        raise KubernetesRenderError(
            f"model version {version!r} is not a registry version number (e.g. 7); aliases such as "
            "champion are resolved before rendering, so the manifest names what it deploys"
        )
    return text


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise KubernetesRenderError(
            f"{what} gives {value!r}, not a valid Kubernetes name (lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters)"
        )
    return value


def _namespace(value: str) -> str:
    if len(value) > 63 or not _NAMESPACE.fullmatch(value):
        raise KubernetesRenderError(
            f"namespace {value!r} is not a valid Kubernetes namespace (lowercase letters, digits and "
            "'-', at most 63 characters)"
        )
    return value


def _dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise KubernetesRenderError(f"{what} {value!r} is not a valid Kubernetes object name")
    return value


def _label_value(value: str, what: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise KubernetesRenderError(f"{what} {value!r} cannot be a Kubernetes label value")
    return value


def _plain_env(extra_env: Mapping[str, str] | None) -> list[dict[str, str]]:
    env = []
    for name in sorted(extra_env or {}):
        if not _ENV_NAME.fullmatch(name):
            raise KubernetesRenderError(f"{name!r} is not an environment variable name")
        env.append({"name": name, "value": str((extra_env or {})[name])})
    return env


def _writable_dirs_env() -> list[dict[str, str]]:
    # Caches go to the tmp emptyDir. HOME itself stays: the Airflow image finds its packages there.
    return [
        {"name": "CONVEYOR_HOME", "value": HOME_DIR},
        {"name": "TMPDIR", "value": TMP_DIR},
        {"name": "XDG_CACHE_HOME", "value": f"{TMP_DIR}/.cache"},
        {"name": "KERAS_HOME", "value": f"{TMP_DIR}/.keras"},
        {"name": "MPLCONFIGDIR", "value": f"{TMP_DIR}/matplotlib"},
    ]


def _env_from(config_map: str, secret: str) -> list[dict[str, Any]]:
    return [
        {"configMapRef": {"name": config_map}},
        # Optional: an MLflow without authentication needs no credentials.
        {"secretRef": {"name": secret, "optional": True}},
    ]


def _http_probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _pod_security(run_as_user: int, run_as_group: int) -> dict[str, Any]:
    if run_as_user < 1:
        raise KubernetesRenderError(f"run_as_user must be a non-root user id, got {run_as_user}")
    if run_as_group < 0:
        raise KubernetesRenderError(f"run_as_group must be a group id, got {run_as_group}")
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_group,
        "fsGroup": run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security(*, read_only_root: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
