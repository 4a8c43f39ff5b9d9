"""Building the PyGithub client from settings: a token or a GitHub App installation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from github import Auth, Github, GithubIntegration

from bot.config import Settings


def github_factory(settings: Settings, *, timeout: int = 15, lazy: bool = False) -> Callable[[], Any]:
    """A factory of ``github.Github`` clients, one per call (PyGithub is not thread-safe to share).
    ``lazy`` clients fetch an object only when it is read (``get_repo(name).compare(…)`` is one request,
    not two).

    PyGithub's own retry is switched off: by default it repeats a POST that got a
    5xx, which for workflow_dispatch could run a deploy twice. promobot retries
    itself, and reconciles against the runs list before it does.
    """
    base_url = settings.github_api_url.rstrip("/")
    if settings.github_token is not None:
        auth: Any = Auth.Token(settings.github_token.get_secret_value())
    elif settings.github_app_id and settings.github_app_private_key is not None:
        if settings.github_app_installation_id is None:
            raise ValueError("GITHUB_APP_INSTALLATION_ID is required with GITHUB_APP_ID")
        app = Auth.AppAuth(settings.github_app_id, settings.secret("github_app_private_key"))
        auth = app.get_installation_auth(settings.github_app_installation_id)
    else:
        raise ValueError("no GitHub credentials: set GITHUB_TOKEN or GITHUB_APP_ID/GITHUB_APP_PRIVATE_KEY")

    def make() -> Any:
        # no client-side pacing either: promobot makes few calls and paces its own retries
        return Github(
            base_url=base_url,
            auth=auth,
            retry=None,
            timeout=timeout,
            per_page=50,
            seconds_between_requests=None,
            seconds_between_writes=None,
            lazy=lazy,
        )

    return make


def github_login(settings: Settings, *, timeout: int = 15) -> Callable[[], str]:
    """Who promobot is on GitHub, as runs it dispatches name their actor: a token's user (``GET /user``), or
    a GitHub App's bot user ``<slug>[bot]`` (``GET /app`` with the App's JWT; an installation token cannot
    call ``GET /user``)."""
    base_url = settings.github_api_url.rstrip("/")
    if settings.github_token is not None:
        token = settings.github_token.get_secret_value()

        def user() -> str:
            gh = Github(base_url=base_url, auth=Auth.Token(token), retry=None, timeout=timeout)
            return str(gh.get_user().login)

        return user
    if settings.github_app_id and settings.github_app_private_key is not None:
        app_auth = Auth.AppAuth(settings.github_app_id, settings.secret("github_app_private_key"))

        def app() -> str:
            integration = GithubIntegration(auth=app_auth, base_url=base_url, retry=None, timeout=timeout)
            return f"{integration.get_app().slug}[bot]"

        return app
    raise ValueError("no GitHub credentials: set GITHUB_TOKEN or GITHUB_APP_ID/GITHUB_APP_PRIVATE_KEY")
