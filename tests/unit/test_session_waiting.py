"""A broker-mode session whose client lags: user-topic messages wait, in order, and nothing is stranded
when the client leaves and comes back."""

from __future__ import annotations

from collections.abc import Callable

from edgehub_emu.mqtt.session import Session


class Connection:
    """What a session needs of a connection, with a switch for 'the client does not read'."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.lagging = False
        self.drained: list[Callable[[], None]] = []

    def send_publish(self, topic, payload, qos, packet_id, dup, retain=False) -> None:
        self.sent.append(payload)

    def send_packet(self, packet) -> None:
        pass

    def close(self, reason: str) -> None:
        pass

    def backed_up(self) -> bool:
        return self.lagging

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drained.append(callback)


def test_messages_wait_for_a_lagging_client_and_go_out_in_order_when_it_catches_up():
    session = Session("sub", clean=False)
    connection = Connection()
    session.connection = connection
    connection.lagging = True
    assert session.lagging()
    made_room = [session.wait_to_send("t", f"m{i}".encode(), 1, limit=2) for i in range(3)]
    assert made_room == [False, False, True]
    assert [p for _, p, _ in session.waiting] == [b"m1", b"m2"]  # the oldest made room
    connection.lagging = False
    (callback,) = connection.drained
    callback()
    assert connection.sent == [b"m1", b"m2"] and not session.waiting


def test_what_waited_when_the_client_left_goes_first_when_it_returns():
    session = Session("sub", clean=False)
    old = Connection()
    session.connection = old
    old.lagging = True
    session.wait_to_send("t", b"waiting", 1, limit=10)
    session.connection = None  # it left; its connection's drain watch is gone with it
    session.queue_offline("t", b"offline", 1)
    back = Connection()
    session.connection = back
    session.flush_offline()
    assert back.sent == [b"waiting", b"offline"]
    assert not session.lagging()
