"""App Home: what waits for my approval, my requests, then every service × environment."""

from __future__ import annotations

from slack_sdk.models.views import View

from bot import service_status as status_of
from bot.promotions import PromotionService
from handlers import blocks as B


async def home_view(service: PromotionService, user: str) -> View:
    """The Home tab for ``user``, read fresh each time it is opened."""
    waiting = await status_of.awaiting_approval_by(service, user)
    mine = status_of.requested_by(service, user)
    return B.home(waiting, mine, status_of.overview(service), service.clock())
