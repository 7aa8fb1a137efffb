"""Twin requests from clients and desired-property patches to them, as edgeHub's twin manager serves
them: a GET returns the twin (``{"desired": …, "reported": …}`` with versions); a reported patch is
checked with edgeHub's limits (400 when it breaks one, 500 when it is not JSON), merged, answered 204
and routed as a twin-change notification (source ``/twinChangeNotifications``, sent as
``{edge device}/$edgeHub`` with ``rpSender*`` naming the real sender); a desired patch goes to the
client only while it listens for them (missed patches are not replayed: a client reads the twin)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..identity import Identity
from ..iothub import DESIRED_PROPERTY_UPDATES
from ..iothub.twins import TwinError, TwinStore, validate_reported_patch
from ..routing import Message
from ..routing.message import (
    CONNECTION_DEVICE_ID,
    CONNECTION_MODULE_ID,
    EDGE_MESSAGE_ID,
    MESSAGE_TYPE,
    RP_SENDER_DEVICE_ID,
    RP_SENDER_MODULE_ID,
    TWIN_CHANGE_NOTIFICATION,
)
from .connections import ConnectionManager
from .telemetry import Ingest, log_store_failure, new_guid

log = logging.getLogger("edgehub_emu.twins")

EDGE_HUB_MODULE = "$edgeHub"

ReportedObserver = Callable[[str, dict[str, Any]], None]


class TwinService:
    def __init__(
        self,
        twins: TwinStore,
        connections: ConnectionManager,
        ingest: Ingest,
        device_id: str,
        counters: Counter[str],
    ) -> None:
        self.twins = twins
        self.connections = connections
        self.ingest = ingest
        self.device_id = device_id
        self.counters = counters
        self.reported_observers: list[ReportedObserver] = []

    def get(self, identity_id: str) -> bytes:
        self.counters["get_twin"] += 1
        return json.dumps(self.twins.twin(identity_id).document()).encode()

    def document(self, identity_id: str, metadata: bool = False) -> dict[str, Any]:
        """The twin as a GET returns it; with ``metadata``, each side's ``$metadata.$lastUpdated``
        (seconds since the epoch), as IoT Hub's service API shows it."""
        twin = self.twins.twin(identity_id)
        document = twin.document()
        if metadata:
            document["desired"]["$metadata"] = {"$lastUpdated": twin.desired_updated}
            document["reported"]["$metadata"] = {"$lastUpdated": twin.reported_updated}
        return document

    def patch_reported(self, identity: Identity, payload: bytes) -> int:
        """Apply a client's reported patch; the status edgeHub answers (204, 400 or 500)."""
        try:
            try:
                patch = json.loads(payload)
            except (ValueError, RecursionError) as exc:
                raise TwinError(500, f"reported patch is not JSON: {exc}") from None
            validate_reported_patch(patch, len(payload))
            self.twins.patch_reported(identity.id, patch)
        except TwinError as exc:
            log.warning("refused a reported patch from %s: %s", identity.id, exc)
            return exc.status
        self.counters["reported_properties"] += 1
        for observer in self.reported_observers:
            observer(identity.id, patch)
        self._route_change(identity, payload)
        return 204

    def _route_change(self, identity: Identity, patch: bytes) -> None:
        system: dict[str, str | None] = {
            MESSAGE_TYPE: TWIN_CHANGE_NOTIFICATION,
            CONNECTION_DEVICE_ID: self.device_id,
            CONNECTION_MODULE_ID: EDGE_HUB_MODULE,
            RP_SENDER_DEVICE_ID: identity.device_id,
            EDGE_MESSAGE_ID: new_guid(),
        }
        if identity.module_id is not None:
            system[RP_SENDER_MODULE_ID] = identity.module_id
        self.ingest.route(Message(body=patch, system_properties=system), log_store_failure)

    def patch_desired(self, identity_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        """The cloud side changes desired properties: stored, and pushed to the client if it listens;
        returns the patch with its new ``$version``."""
        applied = self.twins.patch_desired(identity_id, patch)
        self.push_desired(identity_id, applied)
        return applied

    def seed(self, identity_id: str, desired: dict[str, Any]) -> None:
        """A manifest's desired properties for a module (on start and reload); a change is pushed."""
        patch = self.twins.seed_desired(identity_id, desired)
        if patch is not None:
            self.push_desired(identity_id, patch)

    def report(self, identity_id: str, patch: dict[str, Any]) -> None:
        """Reported properties the hub itself keeps (``$edgeAgent``'s view of local modules)."""
        self.twins.patch_reported(identity_id, patch)

    def push_desired(self, identity_id: str, patch: dict[str, Any]) -> bool:
        connection = self.connections.get(identity_id, DESIRED_PROPERTY_UPDATES)
        if connection is None:
            return False
        connection.proxy.push_desired(patch["$version"], json.dumps(patch).encode())
        return True
