"""Running the promobot composite action the way a GitHub runner does: action.yml's inputs mapped into its
step's environment, then its ``run`` line under bash, against a running promobot."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION_DIR = ROOT / ".github" / "actions" / "promobot"
ACTION = yaml.safe_load((ACTION_DIR / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
USES = re.compile(r"^[^/\s]+/promobot/\.github/actions/promobot@[0-9a-f]{40}$")


@dataclass
class StepResult:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]

    @property
    def log(self) -> str:
        return self.stdout + self.stderr


def evaluate(value: Any, context: dict[str, str]) -> str:
    """``${{ … }}`` in a workflow value, from ``context`` (expression text → value); KeyError names one not known."""
    return EXPRESSION.sub(lambda m: context[m.group(1)], str(value))


def step_environment(with_values: dict[str, str]) -> dict[str, str]:
    """The environment action.yml gives its bash step for these ``with:`` values (defaults filled in)."""
    inputs = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    unknown = set(with_values) - set(inputs)
    assert not unknown, f"not inputs of the promobot action: {sorted(unknown)}"
    inputs.update(with_values)
    step = ACTION["runs"]["steps"][0]
    return {key: evaluate(value, {f"inputs.{n}": v for n, v in inputs.items()}) for key, value in step["env"].items()}


def read_outputs(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT's ``name<<DELIMITER`` blocks."""
    outputs: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        name, _, delimiter = lines[i].partition("<<")
        end = lines.index(delimiter, i + 1)
        outputs[name] = "\n".join(lines[i + 1 : end])
        i = end + 1
    return outputs


async def run_action(
    with_values: dict[str, str], *, tmp_path: Path, github: dict[str, str] | None = None, cwd: Path | None = None
) -> StepResult:
    """Run the action's step once, as a runner would (GITHUB_* from ``github``), without blocking the loop
    that serves promobot."""
    output = tmp_path / f"github_output_{os.urandom(4).hex()}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTION_PATH": str(ACTION_DIR),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/api-gateway",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "deploy",
        "GITHUB_SHA": "7a3f9c2" + "0" * 33,
        "RUNNER_TEMP": str(tmp_path),
        "PROMOBOT_RETRY_BASE_DELAY": "0",
        **(github or {}),
        **step_environment(with_values),
    }
    step = ACTION["runs"]["steps"][0]
    assert step["shell"] == "bash"
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        step["run"],
        env=env,
        cwd=str(cwd or tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return StepResult(proc.returncode, out.decode(), err.decode(), read_outputs(output))


def action_steps(workflow: dict) -> list[tuple[str, dict]]:
    """(job, step) for every step of ``workflow`` that uses the promobot action."""
    return [
        (job_name, step)
        for job_name, job in workflow["jobs"].items()
        for step in job["steps"]
        if "/promobot/.github/actions/promobot@" in str(step.get("uses", ""))
    ]
