"""The slash-command parsers, directly: what each form of ``/promote`` and ``/rollback`` means, and what a
mistyped one is told."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.parsing import (
    CommandError,
    HelpRequest,
    HoldCommand,
    LockCommand,
    PromoteCommand,
    RevokeCommand,
    RollbackCommand,
    parse_promote,
    parse_rollback,
    words_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api-gateway", PromoteCommand("api-gateway")),
        ("api-gateway 7a3f9c2", PromoteCommand("api-gateway", "7a3f9c2")),
        ("api-gateway 7a3f9c2 to production", PromoteCommand("api-gateway", "7a3f9c2", "production")),
        ("api-gateway to staging", PromoteCommand("api-gateway", None, "staging")),
        ("api-gateway 7a3f9c2 --check", PromoteCommand("api-gateway", "7a3f9c2", None, True)),
        ("--dry-run api-gateway", PromoteCommand("api-gateway", None, None, True)),
        ("lock api-gateway production incident INC-42", LockCommand("api-gateway", "production", "incident INC-42")),
        ("unlock api-gateway production", LockCommand("api-gateway", "production", "", unlock=True)),
        ("hold api-gateway 7a3f9c2 leaks memory", HoldCommand("api-gateway", "7a3f9c2", "leaks memory")),
        (
            "hold clear api-gateway 7a3f9c2 fixed in 9b1e0d4",
            HoldCommand("api-gateway", "7a3f9c2", "fixed in 9b1e0d4", clear=True),
        ),
        ("revoke prm-0123456789", RevokeCommand("prm-0123456789")),
        (
            "api-gateway 9b1e0d4 --expedite CVE-2026-1234 fix",
            PromoteCommand("api-gateway", "9b1e0d4", None, False, "CVE-2026-1234 fix"),
        ),
        (
            "api-gateway 9b1e0d4 to production --expedite CVE-2026-1234 --check  fix",
            PromoteCommand("api-gateway", "9b1e0d4", "production", True, "CVE-2026-1234 fix"),
        ),
        (
            "api-gateway 9b1e0d4 --check --expedite patch to staging first",
            PromoteCommand("api-gateway", "9b1e0d4", None, True, "patch to staging first"),
        ),
        (
            "lock api-gateway production '  incident  INC-42 '",
            LockCommand("api-gateway", "production", "incident INC-42"),
        ),
        ('api-gateway "7a3f9c2"', PromoteCommand("api-gateway", "7a3f9c2")),
        ("", HelpRequest()),
        ("help", HelpRequest()),
        ("--help", HelpRequest()),
    ],
)
def test_promote_forms(text, expected):
    assert parse_promote(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("api-gateway 7a3f9c2 --force", "Unknown option `--force`"),
        ("api-gateway 7a3f9c2 to", "`to` needs an environment"),
        (
            "api-gateway 7a3f9c2 extra words",
            "Expected `/promote SERVICE [TAG] [to ENV] [--check] [--expedite REASON…]`",
        ),
        ("lock api-gateway production", "Expected `/promote lock SERVICE ENV reason…`"),
        ("unlock api-gateway", "Expected `/promote unlock SERVICE ENV`"),
        ("unlock api-gateway production now please", "Expected `/promote unlock SERVICE ENV`"),
        ("hold api-gateway 7a3f9c2", "a hold is placed and cleared with a reason"),
        ("hold clear api-gateway 7a3f9c2", "`/promote hold clear SERVICE TAG reason…`"),
        ("revoke", "Expected `/promote revoke PROMOTION_ID`"),
        ("lock api-gateway production ''", "a lock needs a reason"),
        ('lock api-gateway production "   "', "a lock needs a reason"),
        ("hold api-gateway 7a3f9c2 ''", "a hold is placed and cleared with a reason"),
        ("hold clear api-gateway 7a3f9c2 ' '", "a hold is placed and cleared with a reason"),
        ("api-gateway 9b1e0d4 --expedite", "an expedited promotion needs a reason"),
        ("api-gateway 9b1e0d4 --expedite '' --check", "an expedited promotion needs a reason"),
        ("api-gateway --expedite CVE fix", "name the patched artifact's tag"),
    ],
)
def test_promote_mistakes_say_what_was_expected(text, says):
    with pytest.raises(CommandError, match=None) as err:
        parse_promote(text)
    assert says in str(err.value)


def test_an_unbalanced_quote_is_read_as_plain_words():
    assert parse_promote('api-gateway "7a3f9c2') == PromoteCommand("api-gateway", '"7a3f9c2')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api-gateway", RollbackCommand("api-gateway")),
        ("api-gateway 6d3a7c9", RollbackCommand("api-gateway", "6d3a7c9")),
        ("api-gateway in production", RollbackCommand("api-gateway", None, "production")),
        (
            "api-gateway 6d3a7c9 in production error rate doubled",
            RollbackCommand("api-gateway", "6d3a7c9", "production", "error rate doubled"),
        ),
        # without a tag-shaped first word, the words are the reason
        ("api-gateway error rate doubled", RollbackCommand("api-gateway", None, None, "error rate doubled")),
        ("help", HelpRequest()),
        ("", HelpRequest()),
    ],
)
def test_rollback_forms(text, expected):
    assert parse_rollback(text, is_tag=lambda w: w == "6d3a7c9") == expected


def test_rollback_in_needs_an_environment():
    with pytest.raises(CommandError, match="`in` needs an environment"):
        parse_rollback("api-gateway 6d3a7c9 in", is_tag=lambda w: True)


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("ab #-_.\t\r\n\xa0\u2003é;|&$`<>!@%^()=,/?:'\"\\")), max_size=30))
def test_words_are_what_a_shell_would_read(text):
    """The quote-free fast path splits exactly as shlex does (no-break spaces stay inside words)."""
    try:
        expected = shlex.split(text)
    except ValueError:  # an unclosed quote: read word by word
        expected = text.split()
    assert words_of(text) == expected
