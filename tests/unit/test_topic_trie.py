"""Topic filters: edgeHub's matching rules, and the trie that finds matching filters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgehub_emu.mqtt.session import Session, Subscription
from edgehub_emu.mqtt.topic_trie import TopicTrie, filter_matches, valid_filter


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("#", "$iothub/twin/res/200", True),  # edgeHub's gateway: '#' sees $ topics too
        ("a/#", "a", True),
        ("a/+", "a/", True),
        ("a/+", "a", False),
        ("+", "/", False),
        ("A/b", "a/b", False),
        ("devices/d/modules/m/#", "devices/d/modules/m/inputs/in1/k=v", True),
    ],
)
def test_filter_matches(topic_filter: str, topic: str, matches: bool):
    assert filter_matches(topic_filter, topic) is matches


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a#", "a/b+", "+a"])
def test_invalid_filters(topic_filter: str):
    assert not valid_filter(topic_filter)


_level = st.sampled_from(["a", "b", "", "$x"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter = st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"])])
)


@given(st.lists(_filter, max_size=6, unique=True), _topic)
def test_trie_finds_exactly_the_matching_filters(filters: list[str], topic: str):
    trie: TopicTrie[str] = TopicTrie()
    for f in filters:
        trie.add(f, f, f)
    assert {k for k, _ in trie.match(topic)} == {f for f in filters if filter_matches(f, topic)}
    for f in filters[::2]:
        trie.remove(f, f)
    remaining = filters[1::2]
    assert {k for k, _ in trie.match(topic)} == {f for f in remaining if filter_matches(f, topic)}


def test_session_grants_the_highest_qos_among_matching_filters():
    session = Session("c", clean=False)
    session.subscriptions["devices/d/modules/m/#"] = Subscription(0)
    session.subscriptions["devices/d/modules/m/inputs/#"] = Subscription(1)
    assert session.granted_qos("devices/d/modules/m/inputs/x") == 1
    session.subscriptions.pop("devices/d/modules/m/inputs/#")
    assert session.granted_qos("devices/d/modules/m/inputs/x") == 0
    assert session.granted_qos("devices/d/modules/other/inputs/x") is None


def test_a_delivery_is_granted_by_the_filters_that_match_its_bag_whatever_was_answered_before():
    """The answer per input is remembered (every delivery asks), but not where a filter names the bag
    level, and not across a change of subscriptions."""
    session = Session("c", clean=False)
    subscriptions = session.subscriptions
    prefix = "devices/d/modules/m/inputs/x"
    subscriptions[f"{prefix}/+"] = Subscription(0)
    assert [subscriptions.granted_qos_at(prefix, bag) for bag in ("a=1", "a=2", "")] == [0, 0, None]
    subscriptions[f"{prefix}/a=2"] = Subscription(1)  # names one bag: each bag is looked at again
    assert [subscriptions.granted_qos_at(prefix, bag) for bag in ("a=1", "a=2", "a=1")] == [0, 1, 0]
    del subscriptions[f"{prefix}/+"]
    assert [subscriptions.granted_qos_at(prefix, bag) for bag in ("a=1", "a=2", "a=1")] == [None, 1, None]
    subscriptions["devices/d/modules/m/#"] = Subscription(1)
    del subscriptions[f"{prefix}/a=2"]
    assert [subscriptions.granted_qos_at(prefix, bag) for bag in ("a=1", "", "a=2")] == [1, 1, 1]
