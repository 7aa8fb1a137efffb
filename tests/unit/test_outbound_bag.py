"""The bag a delivery's topic ends in: edgeHub's order and precedence, whatever was encoded before."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub_emu.iothub import outbound_bag, property_bag
from edgehub_emu.iothub.topics import _SYSTEM_PAIRS, OUTGOING_SYSTEM_PROPERTIES

NAMES = st.sampled_from(["k", "$.mid", "$.cdid", "a b", "ü"])
VALUES = st.one_of(st.none(), st.sampled_from(["v", "1", "a&b", "x=y", "edge-device", ""]))
SYSTEM_NAMES = st.sampled_from([*OUTGOING_SYSTEM_PROPERTIES, "edgeMessageId", "outputName"])


def expected(properties: dict[str, str | None], system: dict[str, str | None]) -> str:
    """The rule as edgeHub states it: user properties in order, then each mapped system property; a
    system value takes the place of a user property of the same wire name."""
    pairs = dict(properties)
    for name, value in system.items():
        wire = OUTGOING_SYSTEM_PROPERTIES.get(name)
        if wire is not None:
            pairs[wire] = value
    return property_bag.encode(pairs.items())


@settings(max_examples=500)
@given(st.dictionaries(NAMES, VALUES, max_size=3), st.dictionaries(SYSTEM_NAMES, VALUES, max_size=5))
def test_the_bag_follows_edgehubs_rule_when_its_pairs_were_encoded_before(properties, system):
    first = outbound_bag(properties, system)
    assert first == expected(properties, system)
    assert outbound_bag(properties, system) == first  # (the second time from what was kept)


def test_unique_system_values_are_encoded_right_and_what_is_kept_stays_bounded():
    for n in range(10_000):  # a message id each, as a module that sets $.mid sends them
        system = {"messageId": f"m {n}", "connectionDeviceId": "d", "edgeMessageId": str(n)}
        assert outbound_bag({}, system) == f"%24.mid=m%20{n}&%24.cdid=d"
    assert len(_SYSTEM_PAIRS) <= 4096
