"""A module written with the real azure-iot-device SDK, driven by the interop tests.

Run in .venv-sdk. Reads EdgeHubConnectionString and EdgeModuleCACertificateFile like a module does,
prints one JSON line per event on stdout, and takes commands as JSON lines on stdin:
{"send": {"output": ..., "data": ..., "properties": {...}, "content_type": ..., "content_encoding": ...,
"message_id": ..., "correlation_id": ...}}, {"get_twin": true}, {"report": {...}},
{"invoke": {"device", "module", "method", "payload"}}
(module-to-module, edge environment only), {"quit": true}. With IOTEDGE_WORKLOADURI set it connects
through the edge environment (workload API) instead of the connection string.
Direct methods are answered with status 200 and {"echo": <payload>, "method": <name>}.
"""

import json
import os
import sys
import threading

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

_emitting = threading.Lock()


def emit(event, **fields):
    # The SDK calls handlers on threads of its own: one whole line at a time, or two events can share one.
    line = json.dumps({"event": event, **fields}) + "\n"
    with _emitting:
        sys.stdout.write(line)
        sys.stdout.flush()


def main():
    if "IOTEDGE_WORKLOADURI" in os.environ:  # the edge environment: workload API, as on a device
        client = IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=1)
    else:
        with open(os.environ["EdgeModuleCACertificateFile"]) as f:  # noqa: SIM112 - the SDKs' own name
            ca = f.read()
        client = IoTHubModuleClient.create_from_connection_string(
            os.environ["EdgeHubConnectionString"],  # noqa: SIM112 - the SDKs' own name
            server_verification_cert=ca,
            websockets=os.environ.get("SDK_WEBSOCKETS") == "1",
            connection_retry_interval=1,
        )

    def on_message(message):
        emit(
            "message",
            input=message.input_name,
            data=message.data.decode(),
            properties=message.custom_properties,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )

    def on_desired(patch):
        emit("desired", patch=patch)

    def on_method(request):
        client.send_method_response(
            MethodResponse.create_from_method_request(
                request, 200, {"echo": request.payload, "method": request.name}
            )
        )
        emit("method", name=request.name, payload=request.payload)

    client.on_message_received = on_message
    client.on_twin_desired_properties_patch_received = on_desired
    client.on_method_request_received = on_method
    client.connect()
    emit("connected")
    for line in sys.stdin:
        command = json.loads(line)
        if "send" in command:
            spec = command["send"]
            message = Message(spec["data"])
            message.custom_properties = spec.get("properties", {})
            message.content_type = spec.get("content_type")
            message.content_encoding = spec.get("content_encoding")
            message.message_id = spec.get("message_id")
            message.correlation_id = spec.get("correlation_id")
            client.send_message_to_output(message, spec["output"])
            emit("sent")
        elif "get_twin" in command:
            emit("twin", twin=client.get_twin())
        elif "report" in command:
            client.patch_twin_reported_properties(command["report"])
            emit("reported")
        elif "invoke" in command:
            spec = command["invoke"]
            params = {
                "methodName": spec["method"],
                "payload": spec.get("payload"),
                "responseTimeoutInSeconds": 20,
            }
            try:
                result = client.invoke_method(params, spec["device"], spec.get("module"))
                emit("invoked", result=result)
            except Exception as exc:  # report, so the test sees why
                emit("invoke_failed", error=repr(exc))
        elif "quit" in command:
            break
    client.shutdown()
    emit("stopped")


if __name__ == "__main__":
    main()
