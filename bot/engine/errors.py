"""What the engine raises at its callers: a request it cannot serve, and a contradiction of the record."""


class UserError(Exception):
    """A request that cannot be understood or served; the message says what was expected."""


class Conflict(Exception):
    """The request contradicts what is recorded (a tag reported with a second digest); ``rule`` names the
    rule that refused it (``tag mutation``, ``out-of-band report``, ``promotion mismatch``)."""

    def __init__(self, message: str, rule: str | None = None):
        super().__init__(message)
        self.rule = rule
