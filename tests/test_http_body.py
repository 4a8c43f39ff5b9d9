"""Form bodies are read exactly as urllib reads them, whatever the sender put in them."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.http_body import form_fields

FORM_CHARS = st.characters(codec="utf-8") | st.sampled_from(list("%+&=;#?/ 0123456789abcdefABCDEF"))


def urllib_reading(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


@settings(max_examples=2000)
@given(st.text(FORM_CHARS, max_size=80))
def test_any_form_text_reads_as_urllib_reads_it(text):
    assert form_fields(text) == urllib_reading(text)


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=5))
def test_an_encoded_form_reads_back_as_it_was_sent(fields):
    assert form_fields(urlencode(fields)) == fields


def test_a_click_payload_and_repeated_fields():
    payload = {"type": "block_actions", "actions": [{"value": "prm-1 & co = 100% <@U1>"}], "text": "a+b €"}
    assert json.loads(form_fields(urlencode({"payload": json.dumps(payload)}))["payload"]) == payload
    assert form_fields("a=1&b=&a=2") == {"a": "2", "b": ""}  # the last value of a repeated field
