"""The shipped examples hold: the pipeline workflows are valid GitHub Actions (checked against the
schema check-jsonschema ships), use the promobot action pinned by commit, and their steps, run against the
real bot, are accepted and deploy exactly once; the container and Kubernetes manifests run two replicas with
health checks on /healthz."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bot.config import Settings
from tests.action_runner import USES, action_steps, evaluate, run_action
from tests.harness import API_TOKEN, ago, deployed, dispatched, service_unavailable, through_promotion, verified

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
KUBERNETES = ROOT / "examples" / "kubernetes"


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


def test_workflows_use_the_promobot_action_pinned_by_commit_and_install_nothing():
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        steps = action_steps(yaml.safe_load(text))
        assert steps, workflow.name
        for _job, step in steps:
            assert USES.match(step["uses"]), f"{workflow.name}: {step['uses']} is not pinned by a full commit SHA"
        # no package to install (an unpublished name on PyPI is a supply-chain trap), no promobot CLI
        assert "pip install" not in text and "promobot report" not in text, workflow.name


async def test_the_example_workflows_steps_build_deploy_and_report_through_the_real_bot(harness, tmp_path):
    """Run the example workflows' promobot steps, in order, with their ``with:`` values evaluated as a
    runner would: the build reports are accepted, and promobot's dispatch of the deploy workflow is
    authorized, deploys once and ends verified."""
    h = harness
    tag = "7a3f9c2" + "0" * 33
    h.github.add_commits("acme/api-gateway", "main", [tag])
    for name in ("trivy-clean.json", "sbom.cdx.json"):
        shutil.copy(ROOT / "examples" / "reports" / name, tmp_path / ("trivy.json" if "trivy" in name else name))
    build = yaml.safe_load((ROOT / "examples" / "workflows" / "build.yml").read_text())
    digest = await asyncio.to_thread(h.push_image, "api-gateway", tag)  # the build's push step
    assert digest is not None
    context = {
        "vars.PROMOBOT_URL": h.base_url,
        "secrets.PROMOBOT_API_TOKEN": API_TOKEN,
        "env.SERVICE": "api-gateway",
        "env.TAG": tag,
        "steps.push.outputs.digest": digest,
    }
    github = {"GITHUB_SHA": tag, "GITHUB_RUN_ID": "4242", "GITHUB_JOB": "build"}
    sent = []
    for _job, step in action_steps(build):
        with_values = {k: evaluate(v, context) for k, v in step["with"].items()}
        result = await run_action(with_values, tmp_path=tmp_path, github=github)
        assert result.code == 0 and result.outputs["http_status"] == "202", result.log
        sent.append(with_values["type"])
    assert sent == ["artifact.built", "scan.finished", "sbom.published"]

    # the artifact reaches staging through promobot (dev by the pipeline, staging by gate 1), then production
    for event in (deployed("api-gateway", tag, "dev"), verified("api-gateway", tag, "dev")):
        assert (await h.event(event))[0] == 202
    await through_promotion(h, tag, "staging", deployed_at=ago(hours=3), verified_at=ago(hours=2))
    dispatch = await dispatched(h, tag=tag)
    inputs = dispatch["inputs"]
    deploy = yaml.safe_load((ROOT / "examples" / "workflows" / "deploy.yml").read_text())
    context.update({f"inputs.{k}": v for k, v in inputs.items()})
    context.update(
        {
            "steps.deploy.outcome == 'success' && 'success' || 'failure'": "success",
            "steps.verify.outcome == 'success' && 'passed' || 'failed'": "passed",
            "steps.verify.outcome": "success",
        }
    )
    github = {"GITHUB_RUN_ID": str(dispatch["run_id"]), "GITHUB_JOB": "deploy"}
    steps = action_steps(deploy)
    assert [s["with"]["command"] for _, s in steps] == ["authorize", "report", "report"]
    assert deploy["jobs"]["deploy"]["steps"][0] is steps[0][1]  # authorize comes before anything else

    def with_values(step: dict) -> dict:
        return {k: evaluate(v, context) for k, v in step["with"].items()}

    for _job, step in steps:
        result = await run_action(with_values(step), tmp_path=tmp_path, github=github)
        assert result.code == 0, result.log
        if step["with"]["command"] == "authorize":
            # the same workflow dispatched by hand with these inputs is stopped at this first step
            by_hand = h.github.create_run("acme/api-gateway", "deploy.yml", display_title=f"[{inputs['promotion_id']}]")
            refused = await run_action(with_values(step), tmp_path=tmp_path, github={"GITHUB_RUN_ID": str(by_hand)})
            assert refused.code == 1 and "(wrong_actor)" in refused.stdout
    assert (await h.get(f"/api/v1/promotions/{inputs['promotion_id']}"))[1][
        "status"
    ] == "SUCCESS"  # the promotion record (model §record shape): verified


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
