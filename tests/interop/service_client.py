"""Cloud-side code written with Microsoft's azure-iot-hub package, unmodified: IoTHubRegistryManager
from IOTHUB_CONNECTION_STRING, trusting REQUESTS_CA_BUNDLE. Each argument is one call, as JSON
(``{"call": "get_module_twin", "args": [...]}``); each result is printed as a JSON line."""

from __future__ import annotations

import json
import os
import sys

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties


def main() -> int:
    manager = IoTHubRegistryManager.from_connection_string(os.environ["IOTHUB_CONNECTION_STRING"])
    for argument in sys.argv[1:]:
        step = json.loads(argument)
        call, args = step["call"], step.get("args", [])
        try:
            if call in ("update_module_twin", "replace_module_twin"):
                device, module, desired = args
                twin = Twin(properties=TwinProperties(desired=desired))
                result = getattr(manager, call)(device, module, twin)
            elif call == "invoke_device_module_method":
                device, module, name, payload = args
                method = CloudToDeviceMethod(
                    method_name=name, payload=payload, response_timeout_in_seconds=20
                )
                result = manager.invoke_device_module_method(device, module, method)
            else:
                result = getattr(manager, call)(*args)
        except Exception as exc:  # the SDK raises HttpOperationError and others: report, as a test reads it
            status = getattr(getattr(exc, "response", None), "status_code", None)
            print(json.dumps({"call": call, "error": type(exc).__name__, "status": status}), flush=True)
            continue
        print(json.dumps({"call": call, "result": _plain(result)}), flush=True)
    return 0


def _plain(value):
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return value


if __name__ == "__main__":
    sys.exit(main())
