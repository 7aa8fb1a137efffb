"""Warnings for a deployment that edgeHub accepts but that will not do what its author expects.

Route-level traps come from ``routing.lint_route``; this module adds what needs the whole deployment:
routes from or to modules the manifest does not deploy (or spelled in another case: delivery is
case-sensitive), route loops, modules no route touches, and sections this edgeHub schema ignores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..routing import ModuleEndpoint, RouteTable, lint_route
from .loader import Deployment

_SOURCE_MODULE = re.compile(r"^/messages/modules/([^/]+)/", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ManifestWarning:
    path: str
    code: str
    message: str
    severity: str = "warning"  # or "note": worth knowing, often intended

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.code}]"


def lint_deployment(deployment: Deployment, table: RouteTable) -> list[ManifestWarning]:
    """All warnings for a deployment whose routes compiled into ``table``."""
    out: list[ManifestWarning] = []
    modules = deployment.module_names
    by_lower = {m.lower(): m for m in modules}
    paths = {spec.name: spec.path for spec in deployment.routes}
    fed: set[str] = set()
    read: set[str] = set()

    for route in table.routes:
        path = paths.get(route.name, deployment.hub_path("routes", route.name))
        if route.parsed is not None:
            out.extend(ManifestWarning(path, w.code, w.message) for w in lint_route(route.parsed))
        m = _SOURCE_MODULE.match(route.source)
        if m is not None:
            name = m.group(1)
            if name.lower() in by_lower:
                read.add(by_lower[name.lower()])
            else:
                out.append(
                    ManifestWarning(
                        path,
                        "unknown-module",
                        f"FROM names module '{name}', which the manifest does not deploy",
                    )
                )
        elif route.source.lower() in ("/", "/messages/", "/messages/modules/"):
            read.update(modules)
        endpoint = route.endpoint
        if isinstance(endpoint, ModuleEndpoint):
            target = endpoint.module_id
            if target in modules:
                fed.add(target)
            elif target.lower() in by_lower:
                out.append(
                    ManifestWarning(
                        path,
                        "module-case",
                        f"BrokeredEndpoint names module '{target}' but the manifest deploys "
                        f"'{by_lower[target.lower()]}': delivery is case-sensitive, messages would wait "
                        "until their time-to-live runs out",
                    )
                )
            else:
                out.append(
                    ManifestWarning(
                        path,
                        "unknown-module",
                        f"BrokeredEndpoint names module '{target}', which the manifest does not deploy: "
                        "messages would wait until their time-to-live runs out",
                    )
                )
            if target in modules and route.matches_source(f"/messages/modules/{target}/outputs/any"):
                out.append(
                    ManifestWarning(
                        path,
                        "route-loop",
                        f"messages that '{target}' sends match this route and come back to its own input "
                        f"'{endpoint.input_name}': a module that forwards its input loops forever",
                    )
                )

    for name in modules:
        path = f"{deployment.prefix}$edgeAgent.properties.desired.modules.{name}"
        if name not in fed and name not in read:
            out.append(
                ManifestWarning(
                    path, "unrouted-module", f"no route reads from or delivers to module '{name}'"
                )
            )
        elif name not in fed:
            out.append(
                ManifestWarning(
                    path,
                    "no-inputs",
                    f"no route delivers to any input of '{name}' (fine for a module that only sends)",
                    severity="note",
                )
            )
    for name in deployment.module_twins:
        if name not in modules:
            out.append(
                ManifestWarning(
                    f"{deployment.prefix}{name}",
                    "unknown-module",
                    f"desired properties for '{name}', which $edgeAgent does not deploy",
                )
            )
    hub = deployment.edge_hub
    if hub.mqttBroker is not None and hub.schemaVersion in ("1.0", "1.1"):
        out.append(
            ManifestWarning(
                deployment.hub_path("mqttBroker"),
                "schema-version",
                f"mqttBroker needs $edgeHub schemaVersion 1.2 or later; "
                f"with {hub.schemaVersion} it is ignored",
            )
        )
    broker = deployment.broker
    if broker is not None:
        if not any("mqtt:connect" in r.operations for st in broker.authorizations for r in st.allow):
            out.append(
                ManifestWarning(
                    deployment.hub_path("mqttBroker", "authorizations"),
                    "broker-no-connect",
                    "no statement allows mqtt:connect: with the broker mode every module and device is "
                    "refused at CONNECT (CONNACK 5); allow it for {{iot:identity}}",
                )
            )
        if broker.bridges:
            out.append(
                ManifestWarning(
                    deployment.hub_path("mqttBroker", "bridges"),
                    "bridge-upstream",
                    "bridges connect to the broker given with --upstream mqtt://host:port",
                    severity="note",
                )
            )
    return out
