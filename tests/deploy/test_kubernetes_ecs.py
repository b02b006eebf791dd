"""deploy/kubernetes, deploy/ecs, the StackSet template and the Prometheus scrape snippet, validated offline.

The checkers (all installed from PyPI by ``pip install -e '.[dev]'``, or from Debian by scripts/test; none needs the
network when it runs):

* Kubernetes manifests: ``kubernetes-validate --strict`` (PyPI) checks each built-in kind against the OpenAPI schema
  of the Kubernetes release it ships (unknown fields are errors). kubeconform, the usual tool, is a Go binary on no
  registry this project can install from. The prometheus-operator kinds (PodMonitor, PrometheusRule) have no
  schema there: the tests below check what matters of them (selector, port, job label, the rule groups).
* ECS task definition: botocore's own ``RegisterTaskDefinition`` input model (``botocore.validate``), the same
  check boto3 makes before sending the request.
* CloudFormation StackSet template: ``cfn-lint`` (PyPI), with its bundled resource specifications.
* Prometheus scrape snippet: ``promtool check config`` (Debian's ``prometheus`` package, as for the alert rules).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

from rotator.config import load_settings
from rotator.daemon.loop import DaemonTiming

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
ECS_TASK = REPO / "deploy" / "ecs" / "task-definition.json"
STACKSET = REPO / "deploy" / "iam" / "member-role-stackset.yaml"
POLICY = REPO / "deploy" / "iam" / "rotator-policy.json"
SCRAPE = REPO / "deploy" / "prometheus" / "scrape.yml"
BUILT_IN_KINDS = ("namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "deployment.yaml")
#: Fargate's ceiling for a container's stopTimeout (ECS API reference, ContainerDefinition.stopTimeout).
FARGATE_MAX_STOP_TIMEOUT = 120


def tool(name: str) -> str:
    """A checker installed beside this Python (pip's console scripts) or on the PATH; fail, never skip."""
    beside = Path(sys.executable).with_name(name)
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: pip install -e '.[dev]' (or scripts/test) installs it")
    return path


def manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KUBERNETES / name).read_text(encoding="utf-8"))
    return document


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- Kubernetes ---------------------------------------------------------------------------------------------------


def test_kubernetes_manifests_pass_kubernetes_validate(tmp_path: Path) -> None:
    result = kubernetes_validate(*(KUBERNETES / name for name in BUILT_IN_KINDS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(BUILT_IN_KINDS), result.stdout
    # The checker does refuse: a misspelt field and a wrong type in a copy of the Deployment.
    broken = manifest("deployment.yaml")
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 90
    broken["spec"]["replicas"] = "two"
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(broken), encoding="utf-8")
    refused = kubernetes_validate(bad)
    assert refused.returncode != 0, refused.stdout + refused.stderr


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest("deployment.yaml")["spec"]["template"]["spec"]
    return spec


def test_two_replicas_share_a_lease_and_the_config_is_valid(tmp_path: Path) -> None:
    deployment = manifest("deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    config = tmp_path / "config.yaml"
    config.write_text(manifest("configmap.yaml")["data"]["config.yaml"], encoding="utf-8")
    settings = load_settings(str(config), env={})  # the rotator's own loader: unknown keys would fail here
    assert settings.coordination.lease_table == "iam-key-rotator-lease"
    (container,) = pod_spec()["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert volumes[mounts["/etc/rotator"]]["configMap"]["name"] == manifest("configmap.yaml")["metadata"]["name"]


def test_termination_grace_is_above_the_drain() -> None:
    drain = DaemonTiming().stop_timeout.total_seconds()
    assert pod_spec()["terminationGracePeriodSeconds"] >= drain + 30  # the step in flight, then some margin


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    """The "restricted" profile's rules (kubernetes.io/docs/concepts/security/pod-security-standards/)."""
    assert manifest("namespace.yaml")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod_spec()
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in spec.items() if v}
    assert all("hostPath" not in volume for volume in spec["volumes"])
    assert set().union(*(volume.keys() for volume in spec["volumes"])) <= {"name", "configMap", "emptyDir"}
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
        assert security.get("privileged", False) is False
        assert security["readOnlyRootFilesystem"] is True  # beyond "restricted": the image supports it
        assert all("hostPort" not in port for port in container["ports"])
    assert spec["automountServiceAccountToken"] is False  # no Kubernetes API token: the rotator needs none


def test_the_service_account_carries_the_aws_role() -> None:
    account = manifest("serviceaccount.yaml")
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/iam-key-rotator")  # the role name of deploy/iam and config/rotator.yaml
    readme = (KUBERNETES / "README.md").read_text(encoding="utf-8")
    assert "EKS Pod Identity" in readme and "create-pod-identity-association" in readme


def test_the_pod_monitor_scrapes_every_replica_as_job_rotator() -> None:
    monitor = manifest("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    labels = manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), "the PodMonitor selects the rotator's pods"
    # The alerts select job="rotator": the job label comes from a pod label whose value is "rotator".
    assert labels[monitor["spec"]["jobLabel"]] == "rotator"
    (container,) = pod_spec()["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == 9464 and endpoint["path"] == "/metrics"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# -- ECS ----------------------------------------------------------------------------------------------------------


def task_definition() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ECS_TASK.read_text(encoding="utf-8"))
    return document


def register_task_definition_errors(document: dict[str, Any]) -> str:
    model = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition")
    report = ParamValidator().validate(document, model.input_shape)
    return str(report.generate_report()) if report.has_errors() else ""


def test_the_ecs_task_definition_is_a_valid_register_task_definition_request() -> None:
    assert register_task_definition_errors(task_definition()) == ""
    broken = task_definition()
    broken["containerDefinitions"][0]["stopTimeOut"] = 90
    assert "stopTimeOut" in register_task_definition_errors(broken)


def test_the_ecs_task_stops_after_the_drain_and_runs_like_the_image() -> None:
    (container,) = task_definition()["containerDefinitions"]
    drain = DaemonTiming().stop_timeout.total_seconds()
    # ECS's default stop timeout is 30 s: too close to the 25 s drain; Fargate allows 120 s at most.
    assert drain + 30 <= container["stopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT
    assert container["user"] == "10001:10001" and container["readonlyRootFilesystem"] is True
    assert [m["containerPath"] for m in container["mountPoints"]] == ["/tmp"]  # noqa: S108 - the container's path
    assert container["command"] == ["run"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["ROTATOR_COORDINATION__LEASE_TABLE"], "a service of 2 tasks needs the lease"
    assert task_definition()["taskRoleArn"].endswith(":role/iam-key-rotator")


# -- StackSet template for member accounts ------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsic functions (``!Sub``, ``!Ref``, ``!GetAtt``)."""


for _tag, _name in (("!Sub", "Fn::Sub"), ("!Ref", "Ref"), ("!GetAtt", "Fn::GetAtt")):
    _CfnLoader.add_constructor(_tag, lambda loader, node, name=_name: {name: loader.construct_scalar(node)})


def test_the_stackset_template_passes_cfn_lint() -> None:
    result = subprocess.run([tool("cfn-lint"), str(STACKSET)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_member_role_holds_the_rotator_policy() -> None:
    template = yaml.load(STACKSET.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    role = template["Resources"]["RotatorRole"]["Properties"]
    assert role["RoleName"] == "iam-key-rotator"

    def resolved(value: Any) -> Any:
        """CloudFormation's account in an ARN is what ``${aws:PrincipalAccount}`` resolves to in that account."""
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"].replace("${AWS::Partition}", "aws")
            return text.replace("${AWS::AccountId}", "${aws:PrincipalAccount}")
        return value

    (policy,) = role["Policies"]
    statements = [{**s, "Resource": resolved(s["Resource"])} for s in policy["PolicyDocument"]["Statement"]]
    assert statements == json.loads(POLICY.read_text(encoding="utf-8"))["Statement"]
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"]["AWS"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:role/iam-key-rotator"}
    assert trust["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == {"Ref": "OrgId"}


# -- Prometheus scrape snippet ------------------------------------------------------------------------------------


def test_the_scrape_snippet_passes_promtool_and_names_job_rotator() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus'")
    result = subprocess.run(
        [promtool, "check", "config", SCRAPE.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SCRAPE.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["rotator"]
    assert config["rule_files"] == ["alerts.yml"]
