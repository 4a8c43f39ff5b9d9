"""Who may approve: Slack user ids as they are, user-group ids expanded to their members."""

from __future__ import annotations

import time
from typing import Any


class SlackDirectory:
    """Expands user groups through usergroups.users.list, cached for a few minutes."""

    def __init__(self, client: Any, ttl: float = 300.0):
        self._client = client
        self._ttl = ttl
        self._cache: dict[str, tuple[float, set[str]]] = {}

    async def expand(self, ids: list[str]) -> set[str]:
        users: set[str] = set()
        for ident in ids:
            if ident.startswith("S"):
                users |= await self._members(ident)
            else:
                users.add(ident)
        return users

    async def _members(self, group: str) -> set[str]:
        cached = self._cache.get(group)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        resp = await self._client.usergroups_users_list(usergroup=group)
        members = set(resp.get("users") or [])
        self._cache[group] = (time.monotonic(), members)
        return members


class StaticDirectory:
    """User groups from a fixed mapping (``promobot shell --group S0X=U1,U2``)."""

    def __init__(self, groups: dict[str, list[str]] | None = None):
        self._groups = groups or {}

    async def expand(self, ids: list[str]) -> set[str]:
        users: set[str] = set()
        for ident in ids:
            users |= set(self._groups.get(ident, [])) if ident.startswith("S") else {ident}
        return users
