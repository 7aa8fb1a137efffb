"""MQTT 3.1.1, as a broker needs it: the sans-IO codec, the asyncio server (connections, CONNECT,
keep-alive, acknowledgements in order, back-pressure), sessions and the topic-filter trie. What a
publish or a subscription means belongs to the ``Broker`` plugged into the server (the MQTT head)."""

from . import codec
from .codec import Connect, Decoder, ProtocolError, Publish, Will, encode
from .server import AuthResult, Broker, CloseConnection, MqttConnection, MqttServer, PeerInfo, Stored
from .session import NotConnected, Session, SessionStore, Subscription
from .topic_trie import TopicTrie, filter_matches, valid_filter

__all__ = [
    "AuthResult",
    "Broker",
    "CloseConnection",
    "Connect",
    "Decoder",
    "MqttConnection",
    "MqttServer",
    "NotConnected",
    "PeerInfo",
    "ProtocolError",
    "Publish",
    "Session",
    "SessionStore",
    "Stored",
    "Subscription",
    "TopicTrie",
    "Will",
    "codec",
    "encode",
    "filter_matches",
    "valid_filter",
]
