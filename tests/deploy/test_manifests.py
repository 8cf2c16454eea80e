"""deploy/kubernetes: valid offline, complete kustomization, exit codes, hardening, secrets."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sync import errors
from sync.settings import DEFAULT_SECRETS_DIR, Settings, load
from tests.conftest import REPO

from .conftest import KUBERNETES, load_documents

# podFailurePolicy is GA from 1.31; the latest schemas kubernetes-validate ships are checked too.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"
ACCOUNTS_EXAMPLE = KUBERNETES / "secret-accounts.example.yaml"
EXAMPLES = (SECRET_EXAMPLE, ACCOUNTS_EXAMPLE)
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p != KUSTOMIZATION)
WORKLOAD_KINDS = ("CronJob", "Deployment", "Job")
CONTAINER = "comm100-sync"
PLACEHOLDER = re.compile(r"<[a-z0-9-]+>")
README = REPO / "docs" / "deploy.md"
FIRST_STEP_COMPONENTS = ("config", "migrate")
FIRST_STEP_SELECTOR = "-l 'app.kubernetes.io/component in (config, migrate)'"


def all_exit_codes() -> set[int]:
    """Every exit code the exception tree can produce, besides 0 and 1 (a bug)."""
    classes: list[type[errors.SyncError]] = [errors.SyncError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    return {cls.exit_code for cls in classes} - {errors.EX_OK, errors.EX_INTERNAL}


PERMANENT_EXIT_CODES = {errors.EX_DATAERR, errors.EX_NOPERM, errors.EX_CONFIG}
TRANSIENT_EXIT_CODES = {errors.EX_TEMPFAIL}


def resources() -> dict[str, dict[str, Any]]:
    """kind/name → manifest, for everything in deploy/kubernetes."""
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        if path == ACCOUNTS_EXAMPLE:  # the alternative to secret.example.yaml's comm100-sync
            continue
        for doc in load_documents(path):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in resources().values() if doc["kind"] in WORKLOAD_KINDS]


def job_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        job_spec(doc)["template"]["spec"]
        if doc["kind"] in ("CronJob", "Job")
        else doc["spec"]["template"]["spec"]
    )
    return spec


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(doc)["containers"]
    assert only["name"] == CONTAINER
    return dict(only)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    """Strict: an unknown or misspelt field fails too. The schemas ship inside the package."""
    documents = load_documents(path)
    assert documents, f"{path.name} holds no document"
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_broken_manifest() -> None:
    """The validator is really strict offline: a misspelt field is an error, not a warning."""
    cronjob = resources()["CronJob/comm100-sync"]
    broken = yaml.safe_load(yaml.safe_dump(cronjob))
    broken["spec"]["concurrencyPolicyy"] = "Forbid"

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_manifests_hold_no_namespace() -> None:
    """The operator picks the namespace (kustomization or -n)."""
    assert [key for key, doc in resources().items() if "namespace" in doc["metadata"]] == []


def test_kustomization_lists_every_manifest_but_the_secret_examples() -> None:
    """Applying it must never overwrite the real Secrets with placeholders."""
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]

    assert sorted(listed) == sorted(p.name for p in MANIFESTS if p not in EXAMPLES)
    assert len(set(listed)) == len(listed)
    assert "namespace" not in kustomization
    assert [image["name"] for image in kustomization["images"]] == ["comm100-sync"]


def test_kustomize_builds_schema_valid_output() -> None:
    """An extra where kubectl happens to be installed (it is not part of CI's setup)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the kustomization checks above still run")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, built.stderr

    documents = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == sorted(doc["kind"] for doc in resources().values() if doc["kind"] != "Secret")
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "comm100-sync"


def test_every_exit_code_is_either_permanent_or_transient() -> None:
    """A new exit code in sync.errors must be placed in the podFailurePolicy too."""
    assert all_exit_codes() == PERMANENT_EXIT_CODES | TRANSIENT_EXIT_CODES


@pytest.mark.parametrize("name", ["CronJob/comm100-sync", "Job/comm100-sync-migrate"])
def test_pod_failure_policy_fails_on_permanent_and_retries_transient_exit_codes(
    name: str,
) -> None:
    doc = resources()[name]
    spec = job_spec(doc)
    rules = spec["podFailurePolicy"]["rules"]
    by_action: dict[str, set[int]] = {}
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes:
            assert codes["operator"] == "In"
            assert codes["containerName"] == CONTAINER
            by_action.setdefault(rule["action"], set()).update(codes["values"])

    assert by_action == {"FailJob": PERMANENT_EXIT_CODES, "Count": TRANSIENT_EXIT_CODES}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] > 0


def test_cronjob_runs_once_without_overlap_and_keeps_a_short_history() -> None:
    cronjob = resources()["CronJob/comm100-sync"]
    spec = cronjob["spec"]

    assert container(cronjob)["args"] == ["once"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 300
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    # The whole Job (retries included) stays shorter than two schedule periods.
    assert job_spec(cronjob)["activeDeadlineSeconds"] <= 600


def test_deployment_runs_the_loop_with_health_probes_on_the_metrics_port() -> None:
    found = resources()
    deployment = found["Deployment/comm100-sync"]
    config = found["ConfigMap/comm100-sync"]["data"]
    main = container(deployment)
    (port,) = main["ports"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]

    assert main["args"] == ["run"]
    assert port["name"] == "metrics"
    assert int(config["SYNC_METRICS_PORT"]) == port["containerPort"]
    # Liveness must not follow freshness: an API outage would restart healthy pods.
    assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port["containerPort"]),
        "prometheus.io/path": "/metrics",
    }
    service = found["Service/comm100-sync-metrics"]["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == "metrics"


def test_deployment_scales_out_and_survives_a_voluntary_disruption() -> None:
    """Two replicas share the work; a drain evicts one at a time; they land on different nodes."""
    found = resources()
    deployment = found["Deployment/comm100-sync"]
    pods = deployment["spec"]["selector"]["matchLabels"]
    pdb = found["PodDisruptionBudget/comm100-sync"]["spec"]
    replicas = deployment["spec"]["replicas"]
    spread = pod_spec(deployment)["topologySpreadConstraints"]

    assert replicas >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pdb["selector"]["matchLabels"] == pods
    # A drain may take one pod (so a single replica can still be drained), never all of them.
    assert "minAvailable" not in pdb and replicas - pdb["maxUnavailable"] >= 1
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == pods
        # A one-node cluster must still schedule both.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_accounts_secret_example_is_read_as_its_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mounted as the secrets directory (placeholders filled in), it gives the two accounts."""
    (secret,) = load_documents(ACCOUNTS_EXAMPLE)
    data = secret["stringData"]
    fields = {f"SYNC_{name.upper()}" for name in Settings.model_fields}
    names = data["SYNC_ACCOUNTS"].split(",")
    per_account = {"CLIENT_ID", "EMAIL", "PASSWORD", "PARTNER_ID", "RESOURCES"}
    account_keys = {f"SYNC_{n.upper()}__{field}" for n in names for field in per_account}

    assert secret["metadata"]["name"] == "comm100-sync"
    assert set(data) <= fields | account_keys
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    for key, value in data.items():
        if key.endswith(("__CLIENT_ID", "__EMAIL", "__PASSWORD", "__PARTNER_ID")):
            assert PLACEHOLDER.search(value), f"{key} is no placeholder"
        filled = "10001" if key.endswith("__PARTNER_ID") else PLACEHOLDER.sub("x", value)
        if key == "SYNC_DATABASE_URL":
            filled = "sqlite:///example.db"
        (mounted / key).write_text(filled + "\n")
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(mounted))

    accounts = load(Settings).account_list

    assert [account.name for account in accounts] == names
    assert all(account.partner_id == "10001" for account in accounts)
    globex = {account.name: account for account in accounts}["globex"]
    assert [r.name for r in globex.resources] == data["SYNC_GLOBEX__RESOURCES"].split(",")


def test_migrate_job_migrates_with_its_own_secret() -> None:
    found = resources()
    job = found["Job/comm100-sync-migrate"]
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}

    assert container(job)["args"] == ["migrate"]
    assert volumes["secrets"]["secret"]["secretName"] == "comm100-sync-migrate"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    # The loop and the CronJob run with a DML-only role: they must not migrate themselves.
    assert found["ConfigMap/comm100-sync"]["data"]["SYNC_AUTO_MIGRATE"] == "false"


def test_first_apply_step_brings_what_the_migrate_job_needs_and_no_workload() -> None:
    """README's step 4 applies only these, so nothing syncs before the schema is migrated."""
    # The Secrets are created by hand before (step 3), not applied from here.
    found = {key: doc for key, doc in resources().items() if doc["kind"] != "Secret"}
    selected = {
        key
        for key, doc in found.items()
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] in FIRST_STEP_COMPONENTS
    }
    job = found["Job/comm100-sync-migrate"]

    assert all("app.kubernetes.io/component" in doc["metadata"]["labels"] for doc in found.values())
    assert f"ServiceAccount/{pod_spec(job)['serviceAccountName']}" in selected
    assert {key.split("/")[0] for key in selected} == {"ServiceAccount", "ConfigMap", "Job"}
    assert FIRST_STEP_SELECTOR in README.read_text()


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_workload_is_locked_down(doc: dict[str, Any]) -> None:
    pod = pod_spec(doc)
    main = container(doc)
    context = main["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "comm100-sync"


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_workload_mounts_secrets_where_the_settings_read_them_and_a_writable_tmp(
    doc: dict[str, Any],
) -> None:
    pod = pod_spec(doc)
    mounts = {m["mountPath"]: m for m in container(doc)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    secret_mount = mounts[DEFAULT_SECRETS_DIR]
    assert secret_mount["readOnly"] is True
    assert "secret" in volumes[secret_mount["name"]]
    # HOME and TMPDIR of the image point here; the root filesystem is read-only.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_workload_has_requests_and_limits(doc: dict[str, Any]) -> None:
    resources_ = container(doc)["resources"]

    for kind in ("requests", "limits"):
        assert set(resources_[kind]) == {"cpu", "memory"}
    # Measured peak RSS of a first cycle over 100,000 platforms was 190 MiB.
    assert resources_["limits"]["memory"] == "256Mi"


def test_configmap_holds_known_settings_and_no_credentials() -> None:
    data = resources()["ConfigMap/comm100-sync"]["data"]
    fields = {f"SYNC_{name.upper()}" for name in Settings.model_fields}

    assert set(data) <= fields
    assert not set(data) & {"SYNC_PASSWORD", "SYNC_DATABASE_URL", "SYNC_EMAIL", "SYNC_CLIENT_ID"}
    assert all(isinstance(value, str) for value in data.values())


def test_secret_example_holds_only_placeholders_for_known_settings() -> None:
    secrets = load_documents(SECRET_EXAMPLE)
    fields = {f"SYNC_{name.upper()}" for name in Settings.model_fields}

    assert {doc["metadata"]["name"] for doc in secrets} == {
        "comm100-sync",
        "comm100-sync-migrate",
    }
    for doc in secrets:
        assert doc["kind"] == "Secret"
        # base64 `data` would hide what it holds; stringData keeps placeholders reviewable.
        assert "data" not in doc
        assert set(doc["stringData"]) <= fields
        for key, value in doc["stringData"].items():
            assert PLACEHOLDER.search(value), (
                f"{key} in {doc['metadata']['name']} is no placeholder"
            )
    assert "SYNC_PASSWORD" in secrets[0]["stringData"]


def test_every_workload_uses_a_secret_the_example_defines() -> None:
    defined = {doc["metadata"]["name"] for doc in load_documents(SECRET_EXAMPLE)}
    used = {
        volume["secret"]["secretName"]
        for doc in workloads()
        for volume in pod_spec(doc)["volumes"]
        if "secret" in volume
    }
    assert used == defined
