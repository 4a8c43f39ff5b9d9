"""Text that reaches Slack: user input is escaped, never interpreted."""


def esc(text: object) -> str:
    """Escape for mrkdwn: no mentions (<!channel>), links or broken formatting from input."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
