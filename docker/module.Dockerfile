# A sample module (examples/modules/) as a container, beside the hub: see docker/compose.yaml.
# Build from the repository root: docker build -f docker/module.Dockerfile -t edgehub-emu-sample .
# MODULE names the module (its credentials file in /credentials), MODULE_DIR its directory here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /modules
COPY examples/modules/requirements.txt ./
RUN pip install -r requirements.txt \
    && useradd --system --uid 10002 module
COPY examples/modules/simulated_temperature_sensor ./simulated_temperature_sensor
COPY examples/modules/filtermodule ./filtermodule

USER module
# The credentials come from the environment, as on a device: the file `edgehub-emu creds --format shell`
# wrote for this module exports EdgeHubConnectionString and EdgeModuleCACertificateFile.
ENTRYPOINT ["sh", "-c", ". \"/credentials/$MODULE.sh\" && exec python \"/modules/$MODULE_DIR/main.py\""]
