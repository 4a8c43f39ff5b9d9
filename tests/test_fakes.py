"""The Slack and GitHub stand-ins answer the real slack_sdk and PyGithub clients."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github import (
    Auth,
    BadCredentialsException,
    Github,
    GithubException,
    RateLimitExceededException,
    UnknownObjectException,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import SectionBlock
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import FakeSlack

REPO = "acme/api-gateway"
RUN_NAME = "Deploy ${{ inputs.environment }} ${{ inputs.image_tag }} [${{ inputs.promotion_id }}]"
INPUTS = {"environment": "staging", "image_tag": "1.4.2", "promotion_id": "prm-42"}
SHAS = [hashlib.sha1(str(n).encode()).hexdigest() for n in range(5)]


@pytest.fixture
def slack():
    with FakeSlack(usergroups={"S0ONCALL": ["U1", "U2"]}) as fake:
        yield fake


@pytest.fixture
def client(slack):
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


@pytest.fixture
def gh_fake():
    with FakeGitHub() as fake:
        fake.add_repo(REPO)
        fake.add_workflow(REPO, "deploy.yml", workflow_id=161335, run_name=RUN_NAME, name="Deploy")
        fake.add_commits(REPO, ref="main", shas=SHAS[:3])
        yield fake


def github(fake: FakeGitHub, token: str | None = None, **kwargs) -> Github:
    # PyGithub throttles by default (0.25 s between requests, 1 s between writes); a local fake needs neither
    return Github(
        base_url=fake.api_url,
        auth=Auth.Token(token or fake.token),
        seconds_between_requests=None,
        seconds_between_writes=None,
        **kwargs,
    )


# --- Slack ---


async def test_auth_test(client):
    response = await client.auth_test()
    assert (response["user_id"], response["bot_id"], response["team_id"]) == ("UBOT", "BBOT", "T0TEST")


async def test_post_message_with_typed_blocks_then_update(slack, client):
    posted = await client.chat_postMessage(channel="C1", text="hi", blocks=[SectionBlock(text="*Promote* api")])
    second = await client.chat_postMessage(channel="C1", text="again")
    assert posted["ts"] < second["ts"] and posted["message"]["text"] == "hi"
    [first, _] = slack.messages("C1")
    assert first["blocks"][0]["type"] == "section" and first["ts"] == posted["ts"]

    await client.chat_update(channel="C1", ts=posted["ts"], text="done", blocks=[SectionBlock(text="done")])
    assert slack.updates("C1")[0]["blocks"][0]["text"]["text"] == "done"
    assert "Authorization" not in slack.calls("chat.update")[0]["headers"]


async def test_views_open_and_usergroups(slack, client):
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Promote"}, "blocks": []}
    opened = await client.views_open(trigger_id="t1", view=modal)
    assert opened["view"]["id"].startswith("V")
    assert slack.calls("views.open")[0]["params"]["view"]["type"] == "modal"

    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as err:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"


async def test_remaining_methods(slack, client):
    assert (await client.conversations_open(users="U7"))["channel"]["id"] == "DU7"
    assert (await client.users_info(user="U7"))["user"]["tz"] == "UTC"
    assert (await client.chat_postEphemeral(channel="C1", user="U7", text="psst"))["message_ts"]
    link = await client.chat_getPermalink(channel="C1", message_ts="1700000000.000100")
    assert link["permalink"].endswith("/archives/C1/p1700000000000100")
    assert (await client.views_publish(user_id="U7", view={"type": "home", "blocks": []}))["view"]["type"] == "home"
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.nope")
    assert err.value.response["error"] == "unknown_method" and slack.calls("chat.nope")


async def test_files_upload_v2_keeps_bytes(slack, client):
    data = bytes(range(256)) * 4
    response = await client.files_upload_v2(
        channel="C1", content=data, filename="report.json", title="Report", initial_comment="scan results"
    )
    [recorded] = slack.files()
    assert recorded["bytes"] == data and recorded["channel_id"] == "C1" and recorded["title"] == "Report"
    assert recorded["initial_comment"] == "scan results" and response["file"]["id"] == recorded["id"]


async def test_bad_token_and_injected_rate_limit(slack):
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"

    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    slack.fail_next("chat.postMessage")
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="x")
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C1", text="x")
    assert len(slack.messages()) == 1 and len(slack.calls("chat.postMessage")) == 2


async def test_response_url_and_wait_for(slack):
    url = slack.response_url("cmd1")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"text": "Queued", "response_type": "ephemeral"}) as response:
            assert response.status == 200 and await response.text() == "ok"
    assert slack.wait_for(lambda f: f.responses("cmd1"))[0]["text"] == "Queued"
    assert (await slack.wait_for_async(lambda f: f.responses()[0]))["response_type"] == "ephemeral"
    with pytest.raises(AssertionError, match="condition not met"):
        slack.wait_for(lambda f: f.messages("C9")[0], timeout=0.1)


# --- GitHub ---


def test_dispatch_returns_run_details(gh_fake):
    workflow = github(gh_fake).get_repo(REPO).get_workflow("deploy.yml")
    run = workflow.create_dispatch("main", inputs=INPUTS, throw=True, return_run_details=True)
    [dispatch] = gh_fake.dispatches(REPO)
    assert run.id == dispatch["run_id"] and dispatch["inputs"] == INPUTS and dispatch["return_run_details"] is True
    assert run.display_title == "Deploy staging 1.4.2 [prm-42]"  # lazily completed from GET .../runs/{id}
    assert (run.status, run.event, run.head_sha, run.name) == ("queued", "workflow_dispatch", SHAS[2], "Deploy")


def test_dispatch_without_run_details_then_find_run(gh_fake):
    gh_fake.ghes_no_run_details = True
    since = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    workflow = github(gh_fake).get_repo(REPO).get_workflow("deploy.yml")
    inputs = {**INPUTS, "promotion_id": "prm-7"}
    assert workflow.create_dispatch("main", inputs=inputs, throw=True, return_run_details=True) is True
    workflow.create_dispatch("main", inputs=INPUTS, throw=True)
    runs = list(workflow.get_runs(event="workflow_dispatch", branch="main", created=f">={since}"))
    assert len(runs) == 2 and "[prm-42]" in runs[0].display_title  # newest first
    assert [r.id for r in runs if "[prm-7]" in r.display_title] == [gh_fake.dispatches()[0]["run_id"]]
    assert list(workflow.get_runs(created=f">={(datetime.now(UTC) + timedelta(hours=1)).isoformat()}")) == []


def test_dispatch_to_unknown_branch_is_422(gh_fake):
    workflow = github(gh_fake).get_repo(REPO).get_workflow(161335)
    with pytest.raises(GithubException) as err:
        workflow.create_dispatch("nope", inputs=INPUTS, throw=True)
    assert err.value.status == 422 and gh_fake.dispatches() == []


def test_run_progress_and_pagination(gh_fake):
    repo = github(gh_fake, per_page=2).get_repo(REPO)
    for _ in range(3):
        repo.get_workflow("deploy.yml").create_dispatch("main", inputs=INPUTS, throw=True)
    run_id = gh_fake.dispatches()[0]["run_id"]
    gh_fake.start_run(run_id)
    assert repo.get_workflow_run(run_id).status == "in_progress"
    gh_fake.complete_run(run_id, conclusion="failure")
    run = repo.get_workflow_run(run_id)
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert len(list(repo.get_workflow_runs())) == 3
    assert [r.id for r in repo.get_workflow_runs(status="failure")] == [run_id]
    assert any(r["query"].get("page") == "2" for r in gh_fake.requests())  # followed the Link header


def test_compare_and_commit(gh_fake):
    gh_fake.add_commits(REPO, ref="hotfix", shas=SHAS[:2] + [SHAS[4]])
    repo = github(gh_fake).get_repo(REPO)
    ahead = repo.compare(SHAS[0], SHAS[2])
    assert (ahead.status, ahead.ahead_by, ahead.behind_by) == ("ahead", 2, 0)
    assert [c.sha for c in ahead.commits] == SHAS[1:3] and ahead.commits[0].commit.message == f"Commit {SHAS[1][:7]}"
    assert repo.compare(SHAS[2], SHAS[0]).status == "behind"
    assert repo.compare(SHAS[2], SHAS[2][:10]).status == "identical"
    assert (repo.compare("main", "hotfix").status, repo.compare("main", "hotfix").behind_by) == ("diverged", 1)
    with pytest.raises(UnknownObjectException):
        repo.compare(SHAS[0], "f" * 40)
    assert repo.get_commit(SHAS[1]).parents[0].sha == SHAS[0]


def test_injected_502s_then_recovery(gh_fake):
    gh = github(gh_fake, retry=None)  # PyGithub's default GithubRetry would retry 5xx transparently
    gh_fake.fail_next(2, status=502)
    for _ in range(2):
        with pytest.raises(GithubException) as err:
            gh.get_repo(REPO)
        assert err.value.status == 502
    assert gh.get_repo(REPO).default_branch == "main"

    gh_fake.fail_next(2, status=502, path_contains="/repos/")
    assert github(gh_fake).get_repo(REPO).full_name == REPO  # default retry absorbs both
    assert [r["status"] for r in gh_fake.requests()[-3:]] == [502, 502, 200]


def test_rate_limit_and_bad_credentials(gh_fake):
    gh_fake.fail_next(1, status=403, rate_limit_reset=int(time.time()) + 60)
    with pytest.raises(RateLimitExceededException) as limited:
        github(gh_fake, retry=None).get_repo(REPO)
    assert {k.lower(): v for k, v in limited.value.headers.items()}["x-ratelimit-remaining"] == "0"
    with pytest.raises(BadCredentialsException) as err:
        github(gh_fake, token="ghp_wrong").get_repo(REPO)
    assert err.value.status == 401


def test_github_app_installation_auth(gh_fake):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    auth = Auth.AppAuth(4242, pem).get_installation_auth(gh_fake.installation_id)
    gh = Github(base_url=gh_fake.api_url, auth=auth, seconds_between_requests=None)
    assert gh.get_repo(REPO).default_branch == "main"
    assert [r["path"] for r in gh_fake.requests()][:2] == ["/app/installations/1/access_tokens", f"/repos/{REPO}"]


def test_dispatch_delay_records_before_answering(gh_fake):
    gh_fake.dispatch_delay = 1.0
    workflow = github(gh_fake).get_repo(REPO).get_workflow("deploy.yml")
    worker = threading.Thread(target=workflow.create_dispatch, args=("main", INPUTS), kwargs={"throw": True})
    worker.start()
    gh_fake.wait_for(lambda f: f.dispatches(), timeout=0.8)
    assert worker.is_alive() and gh_fake.runs(REPO)[0]["status"] == "queued"
    worker.join()
