"""iotedgehubdev's single-module mode, as a deployment: one module ``target`` under test, its inputs fed
from outside, its outputs to ``$upstream``.

``iotedgehubdev start -i input1,input2`` runs edgeHub with a module ``target`` (the one being
debugged, its credentials from ``iotedgehubdev modulecred``) and a helper that turns ``POST
/api/v1/messages {"inputName": …, "data": …}`` into messages on ``target``'s inputs; ``target``'s
outputs go back to the helper, which prints them. Here the inputs are fed by the management API's
``/api/v1/messages`` directly and the outputs go to ``$upstream`` (``edgehub-emu monitor``).
"""

from __future__ import annotations

import re
from typing import Any

TARGET = "target"
_INPUT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def input_names(inputs: list[str]) -> tuple[str, ...]:
    """``--inputs input1,input2`` (or repeated) as names; ValueError naming one that cannot be an input."""
    names = tuple(dict.fromkeys(n.strip() for i in inputs for n in i.split(",") if n.strip()))
    if not names:
        raise ValueError("--inputs needs at least one input name (e.g. --inputs input1,input2)")
    for name in names:
        if not _INPUT_NAME.match(name):
            raise ValueError(f"input name {name!r}: letters, digits, '_', '-' and '.' only")
    return names


def single_module_manifest() -> dict[str, Any]:
    """The deployment manifest of the single-module mode: ``target``, its outputs to ``$upstream``."""
    routes = {"targetOutputs": f"FROM /messages/modules/{TARGET}/outputs/* INTO $upstream"}
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "edgeAgent"}},
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "edgeHub"},
                        },
                    },
                    "modules": {
                        TARGET: {
                            "version": "1.0",
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "the module under test"},
                        }
                    },
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": routes,
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }
