"""Pydantic models of a deployment manifest's ``$edgeAgent`` and ``$edgeHub`` desired properties.

They follow the IoT Edge deployment schema as the documentation and edgeAgent/edgeHub accept it.
Unknown fields are kept (edgeHub ignores them; tools add their own). Routes are kept as raw JSON here
and checked by ``loader.py``, which gives route errors edgeHub's own words.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

EDGE_AGENT_SCHEMAS = ("1.0", "1.1")
EDGE_HUB_SCHEMAS = ("1.0", "1.1", "1.2", "1.3")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def _check_schema(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise PydanticCustomError(
            "schema_version",
            "must be one of {allowed}, got {shown}",
            {"allowed": ", ".join(allowed), "shown": repr(value)},
        )
    return value


class RegistryCredential(_Model):
    username: str
    password: str
    address: str


class RuntimeSettings(_Model):
    minDockerVersion: str | None = None
    loggingOptions: str | None = None
    registryCredentials: dict[str, RegistryCredential] = Field(default_factory=dict)


class Runtime(_Model):
    type: Literal["docker"]
    settings: RuntimeSettings = Field(default_factory=RuntimeSettings)


class ModuleSettings(_Model):
    image: str
    createOptions: str | dict[str, Any] | None = None

    @field_validator("createOptions")
    @classmethod
    def _create_options_json(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value.strip():
            try:
                json.loads(value)
            except ValueError as exc:
                raise PydanticCustomError(
                    "create_options", "must be a JSON object in a string: {error}", {"error": str(exc)}
                ) from None
        return value


class EnvValue(_Model):
    value: str | int | float | bool


RestartPolicy = Literal["never", "on-failure", "on-unhealthy", "always"]


class EdgeAgentModule(_Model):
    type: Literal["docker"]
    settings: ModuleSettings
    env: dict[str, EnvValue] = Field(default_factory=dict)
    imagePullPolicy: Literal["on-create", "never"] | None = None


class EdgeHubModule(EdgeAgentModule):
    status: Literal["running"] = "running"
    restartPolicy: RestartPolicy = "always"
    startupOrder: int = Field(default=0, ge=0, le=4294967295)


class SystemModules(_Model):
    edgeAgent: EdgeAgentModule
    edgeHub: EdgeHubModule


class Module(EdgeAgentModule):
    version: str | None = None
    status: Literal["running", "stopped"]
    restartPolicy: RestartPolicy
    startupOrder: int = Field(default=4294967295, ge=0, le=4294967295)


class EdgeAgentDesired(_Model):
    schemaVersion: str
    runtime: Runtime
    systemModules: SystemModules
    modules: dict[str, Module] = Field(default_factory=dict)

    @field_validator("schemaVersion")
    @classmethod
    def _schema(cls, value: str) -> str:
        return _check_schema(value, EDGE_AGENT_SCHEMAS)


class StoreLimits(_Model):
    maxSizeBytes: int = Field(default=0, ge=0)


class StoreAndForwardConfiguration(_Model):
    timeToLiveSecs: int = Field(default=7200, ge=0, le=4294967295)
    storeLimits: StoreLimits | None = None


class EdgeHubDesired(_Model):
    schemaVersion: str
    routes: dict[str, Any] = Field(default_factory=dict)
    storeAndForwardConfiguration: StoreAndForwardConfiguration = Field(
        default_factory=StoreAndForwardConfiguration
    )
    mqttBroker: dict[str, Any] | None = None

    @field_validator("schemaVersion")
    @classmethod
    def _schema(cls, value: str) -> str:
        return _check_schema(value, EDGE_HUB_SCHEMAS)
