"""Block Kit rendering: pure functions from promotion state to typed blocks (``slack_sdk.models.blocks``).

``card``: the approval card and the reject modal; ``replies``: refusals and gate reports;
``status``: /status; ``home``: App Home; ``digest`` and ``chart``: the daily digest;
``common``: what they share (action ids, icons, Slack's limits, gate and history lines).
"""

from handlers.blocks.card import approval_card, card_text, reject_modal
from handlers.blocks.common import APPROVE, CANCEL, REJECT, REJECT_VIEW, REVOKE, message
from handlers.blocks.home import home
from handlers.blocks.replies import eligibility, refusal, refusal_text
from handlers.blocks.status import overview, service_status, service_status_text

__all__ = [
    "APPROVE",
    "CANCEL",
    "REJECT",
    "REJECT_VIEW",
    "REVOKE",
    "approval_card",
    "card_text",
    "eligibility",
    "home",
    "message",
    "overview",
    "refusal",
    "refusal_text",
    "reject_modal",
    "service_status",
    "service_status_text",
]
