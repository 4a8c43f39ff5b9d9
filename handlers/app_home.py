"""App Home: what waits for my approval, my requests, then every service × environment."""

from __future__ import annotations

from slack_sdk.models.views import View

from bot.engine.service import PromotionService
from bot.offload import off_loop
from handlers import blocks as B


async def home_view(service: PromotionService, user: str) -> View:
    """The Home tab for ``user``, read fresh each time it is opened."""
    waiting = await service.status.awaiting_approval_by(user)
    mine = await off_loop(service.status.requested_by, user)
    overview = await off_loop(service.status.overview)
    return B.home(waiting, mine, overview, service.clock())
