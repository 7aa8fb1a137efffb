"""The fast path for telemetry topics gives exactly what edgeHub's template engine gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub_emu.iothub.topics import INBOUND_TEMPLATES, _bind_fast, match_templates

LEVELS = st.sampled_from(
    ["devices", "d", "modules", "m", "messages", "events", "a=1&b", "", "%24.on=o", "x/y"]
)


@settings(max_examples=3000)
@given(st.lists(LEVELS, min_size=1, max_size=9).map("/".join))
def test_fast_path_agrees_with_the_templates(topic: str):
    fast = _bind_fast(topic)
    if fast is not None:
        assert fast == match_templates(INBOUND_TEMPLATES, topic)


def test_fast_path_takes_the_topics_the_sdks_send():
    for topic in (
        "devices/d/modules/m/messages/events/%24.on=out1&%24.mid=1",  # Python SDK
        "devices/d/modules/m/messages/events/%24.on=out1&k=v%201/",  # Node SDK: trailing slash
        "devices/leaf/messages/events/k=v",
        "devices/leaf/messages/events",
    ):
        assert _bind_fast(topic) is not None
        assert _bind_fast(topic) == match_templates(INBOUND_TEMPLATES, topic)
