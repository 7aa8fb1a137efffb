"""The OpenAPI document of the management API (served at /openapi.json; a test keeps it in step with
the routes in management.py)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "An error; the message says what to fix",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_MODULE = [
    {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "module", "in": "path", "required": True, "schema": {"type": "string"}},
]
_MESSAGE_HEADERS = [
    {
        "name": "edgehub-properties",
        "in": "header",
        "description": 'application properties as a JSON object, names exactly as given: {"alert": "true"}',
        "schema": {"type": "string"},
    },
    {
        "name": "edgehub-system-properties",
        "in": "header",
        "description": "system properties as a JSON object, by edgeHub's names: messageId, cid, ...",
        "schema": {"type": "string"},
    },
    {
        "name": "iothub-app-{name}",
        "in": "header",
        "description": "an application property",
        "schema": {"type": "string"},
    },
    {"name": "iothub-messageid", "in": "header", "schema": {"type": "string"}},
    {"name": "iothub-correlationid", "in": "header", "schema": {"type": "string"}},
    {
        "name": "content-type",
        "in": "header",
        "description": "the message's contentType",
        "schema": {"type": "string"},
    },
    {"name": "content-encoding", "in": "header", "schema": {"type": "string"}},
]
_JSON = "application/json"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "edgehub-emu management API",
        "version": "1",
        "description": "The cloud side of a local IoT Edge hub. Paths mirror IoT Hub's service API.",
    },
    "paths": {
        "/twins/{device}/modules/{module}/methods": {
            "post": {
                "summary": "Invoke a direct method on a module",
                "parameters": _MODULE,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/MethodRequest"}}},
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/MethodResult"}, "The module's answer"),
                    "400": _ERROR,
                    "404": _ERROR,
                    "504": _ERROR,
                },
            }
        },
        "/twins/{device}/modules/{module}": {
            "get": {
                "summary": "A module's twin",
                "parameters": _MODULE,
                "responses": {"200": _json({"$ref": "#/components/schemas/Twin"}, "The twin"), "404": _ERROR},
            },
            "patch": {
                "summary": "Patch desired properties (pushed to the module if it listens)",
                "parameters": _MODULE,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Twin"}}},
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Twin"}, "The twin after the patch"),
                    "400": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/modules/{module}/inputs/{input}/messages": {
            "post": {
                "summary": "Queue a message for a module input, as if a route had sent it",
                "parameters": [
                    {"name": "module", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "input", "in": "path", "required": True, "schema": {"type": "string"}},
                    *_MESSAGE_HEADERS,
                ],
                "requestBody": {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"202": _json({"type": "object"}, "Queued"), "404": _ERROR},
            }
        },
        "/devices/{device}/messages/devicebound": {
            "post": {
                "summary": "Send a cloud-to-device message to a connected leaf device",
                "parameters": [
                    {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}},
                    *_MESSAGE_HEADERS,
                ],
                "requestBody": {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"202": _json({"type": "object"}, "Sent"), "404": _ERROR},
            }
        },
        "/upstream/messages": {
            "get": {
                "summary": "Messages that reached $upstream",
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer", "default": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "messages": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/UpstreamMessage"},
                                }
                            },
                        },
                        "The messages, oldest first",
                    ),
                    "400": _ERROR,
                },
            }
        },
        "/upstream/stream": {
            "get": {
                "summary": "Server-Sent Events: each message that reaches $upstream (event 'message')",
                "parameters": [{"name": "since", "in": "query", "schema": {"type": "integer"}}],
                "responses": {
                    "200": {"description": "An event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/trace": {
            "get": {
                "summary": "What became of messages the hub accepted: who sent them, what each route made of "
                "them and why, where they were queued, and what happened there",
                "parameters": [
                    {
                        "name": "id",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "edgeMessageId",
                    },
                    {"name": "module", "in": "query", "schema": {"type": "string"}},
                    {"name": "output", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 10}},
                ],
                "responses": {"200": _json({"type": "object"}, "The messages, oldest first"), "400": _ERROR},
            },
            "put": {
                "summary": 'Pause ({"enabled": false}) or resume ({"enabled": true}) the message trace',
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _json({"type": "object"}, "Whether it records"),
                    "400": _ERROR,
                    "409": _ERROR,
                },
            },
        },
        "/": {
            "get": {
                "summary": "The dashboard (a web page; served without the API token)",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/static/{name}": {
            "get": {
                "summary": "The dashboard's script and style sheet",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The asset"}, "404": _ERROR},
            }
        },
        "/graph.svg": {
            "get": {
                "summary": "The running deployment's routes as a picture (as 'edgehub-emu graph -f svg')",
                "responses": {"200": {"description": "SVG", "content": {"image/svg+xml": {}}}},
            }
        },
        "/dashboard/state": {
            "get": {
                "summary": "What the dashboard shows: status, what each route made of the last message from "
                "its "
                "source, and the latest messages (received after ?after=, seconds since the epoch)",
                "parameters": [{"name": "after", "in": "query", "schema": {"type": "integer", "default": 0}}],
                "responses": {"200": _json({"type": "object"}, "The state"), "400": _ERROR},
            }
        },
        "/dashboard/stream": {
            "get": {
                "summary": "Server-Sent Events: the dashboard's state once a second (event 'state')",
                "responses": {
                    "200": {"description": "An event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/status": {
            "get": {
                "summary": "Identities, connections, queues, routes, local modules, upstream, broker mode",
                "responses": {"200": _json({"type": "object"}, "Status")},
            }
        },
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "ok")}}},
        "/api/v1/messages": {
            "post": {
                "summary": "iotedgehubdev's single-module mode (run --inputs): a message for an input of "
                "module 'target'",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["inputName"],
                                "properties": {"inputName": {"type": "string"}, "data": {}},
                            }
                        }
                    }
                },
                "responses": {
                    "200": _json({"type": "object"}, "Queued"),
                    "400": _json({"type": "object"}, "Not one of the inputs"),
                    "404": _json({"type": "object"}, "Not in the single-module mode"),
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI")}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics with edgeHub's names",
                "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}},
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "MethodRequest": {
                "type": "object",
                "required": ["methodName"],
                "properties": {
                    "methodName": {"type": "string"},
                    "payload": {},
                    "responseTimeoutInSeconds": {"type": "number", "default": 30},
                    "connectTimeoutInSeconds": {"type": "number", "default": 0},
                },
            },
            "MethodResult": {"type": "object", "properties": {"status": {"type": "integer"}, "payload": {}}},
            "Twin": {
                "type": "object",
                "properties": {
                    "deviceId": {"type": "string"},
                    "moduleId": {"type": "string"},
                    "properties": {
                        "type": "object",
                        "properties": {"desired": {"type": "object"}, "reported": {"type": "object"}},
                    },
                },
            },
            "UpstreamMessage": {
                "type": "object",
                "properties": {
                    "sequence": {"type": "integer"},
                    "origin": {"type": "string"},
                    "enqueuedTime": {"type": "string"},
                    "receivedTime": {"type": "string"},
                    "properties": {"type": "object"},
                    "systemProperties": {"type": "object"},
                    "body": {"type": "string", "nullable": True},
                    "bodyBase64": {"type": "string"},
                },
            },
        }
    },
}
