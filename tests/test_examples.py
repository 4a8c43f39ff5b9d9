"""The shipped examples hold: the pipeline workflows are valid GitHub Actions (checked against the
schema check-jsonschema ships) and send events the bot accepts; the container and Kubernetes
manifests run two replicas with health checks on /healthz."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

import pytest
import yaml

from bot.cli import _report_event, parser
from bot.config import Settings
from handlers.pipeline_api import validate_event
from tests.harness import service_unavailable

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
KUBERNETES = ROOT / "examples" / "kubernetes"
# what the runner's variables hold when the report steps run
SAMPLE_ENV = {
    "SERVICE": "api-gateway",
    "TAG": "7a3f9c2" + "0" * 33,
    "DIGEST": "sha256:" + "ab" * 32,
    "GITHUB_SHA": "7a3f9c2" + "0" * 33,
    "GITHUB_RUN_ID": "4242",
    "ENVIRONMENT": "staging",
    "STATUS": "success",
    "RESULT": "passed",
    "SMOKE": "success",
    "RUN_URL": "https://github.com/acme/api-gateway/actions/runs/4242",
}


def _check_jsonschema() -> str:
    found = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not os.path.exists(found):
        service_unavailable("check-jsonschema is not installed (pip install -e '.[test]')")
    return found


def test_workflows_are_valid_github_actions():
    assert [w.name for w in WORKFLOWS] == ["build.yml", "deploy.yml"]
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_workflow_takes_the_dispatch_inputs_and_names_its_run_after_the_promotion():
    workflow = yaml.safe_load((ROOT / "examples" / "workflows" / "deploy.yml").read_text())
    inputs = workflow[True]["workflow_dispatch"]["inputs"]  # YAML 1.1 reads the key `on` as True
    assert set(inputs) == {"environment", "image_tag", "image_digest", "promotion_id"}
    assert all(i["required"] for i in inputs.values())
    assert "${{ inputs.promotion_id }}" in workflow["run-name"]
    steps = workflow["jobs"]["deploy"]["steps"]
    assert sum("PLACEHOLDER" in s.get("name", "") for s in steps) == 2


def _report_commands(workflow: Path) -> list[str]:
    commands = []
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            commands += [line.strip() for line in script.splitlines() if line.strip().startswith("promobot report")]
    return commands


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_workflow_reports_are_events_the_bot_accepts(workflow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("trivy-clean.json", "sbom.cdx.json"):
        shutil.copy(ROOT / "examples" / "reports" / name, tmp_path / name)
    (tmp_path / "trivy.json").write_text((tmp_path / "trivy-clean.json").read_text())
    commands = _report_commands(workflow)
    assert commands
    types = []
    for command in commands:
        assert set(re.findall(r"\$\{?(\w+)", command)) <= set(SAMPLE_ENV), f"unknown variables in {command!r}"
        words = [Template(w).substitute(SAMPLE_ENV) for w in shlex.split(command)]
        event = validate_event(_report_event(parser().parse_args(words[1:])))
        types.append(event["type"])
    expected = (
        ["artifact.built", "scan.finished", "sbom.published"]
        if workflow.name == "build.yml"
        else ["deployment.finished", "verification.finished"]
    )
    assert types == expected


def _manifests() -> dict[str, dict]:
    docs = [d for f in sorted(KUBERNETES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_kubernetes_runs_two_replicas_with_health_checks_and_instance_ids():
    m = _manifests()
    deployment = m["Deployment/promobot"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    env = {e["name"]: e for e in container["env"]}
    assert env["PROMOBOT_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["envFrom"][0]["secretRef"]["name"] == "promobot"
    assert m["Service/promobot"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # every key of the Secret template is a setting promobot reads
    keys = set(m["Secret/promobot"]["stringData"])
    assert keys <= {name.upper() for name in Settings.model_fields}, keys
    assert m["Secret/promobot"]["stringData"]["DATABASE_URL"].startswith("postgresql://")


def test_kubernetes_gives_the_audit_archive_a_writable_persistent_volume():
    m = _manifests()
    pod = m["Deployment/promobot"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    archive = {e["name"]: e for e in container["env"]}["PROMOBOT_AUDIT_ARCHIVE_DIR"]["value"]
    mount = next(v for v in container["volumeMounts"] if v["mountPath"] == archive)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = m[f"PersistentVolumeClaim/{volume['persistentVolumeClaim']['claimName']}"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # either replica may run the day's purge
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # writable by promobot
    assert Settings(promobot_audit_archive_dir=archive).promobot_audit_archive_dir == archive


def test_dockerfile_runs_promobot_serve_as_a_user_with_a_healthcheck():
    text = (ROOT / "examples" / "docker" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0") and "HEALTHCHECK" in text and "/healthz" in text
    assert lines[-1].startswith("CMD") and '"promobot", "serve"' in lines[-1]
    # the build context copies what pip needs to install promobot
    copied = {word for line in lines if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert copied == {"pyproject.toml", "README.md", "bot/", "handlers/", "checks/", "storage/"}
    # the audit archive goes to the writable data volume, not the (root-owned) working directory
    assert "PROMOBOT_AUDIT_ARCHIVE_DIR=/data/audit-archive" in text and 'VOLUME ["/data"]' in text
