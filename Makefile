# The two commands a newcomer needs: `make run` and `make test`.
# Everything else (the virtual environment, the install) happens on the way.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The real Azure IoT SDK for Python needs paho-mqtt<2, so it lives in its own environment; the interop
# tests run sample modules in it as subprocesses. It also holds edgehub-emu and pytest, as a module
# project's environment would: the README's fixture example runs there.
SDK_VENV := .venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed-stamp
MANIFEST ?= config/deployment.json
# The sample modules, started by the hub as local processes (an edgeAgent for your laptop).
LOCAL_MODULES ?= config/local-modules.json

.PHONY: run test lint format bench venv bytecode compiled clean mosquitto-check chromium-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SDK_STAMP): examples/modules/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/python -m pip install --quiet -r examples/modules/requirements.txt -e . pytest
	touch $(SDK_STAMP)

# Microsoft's service SDK (azure-iot-hub, which needs six), for the cloud side's tests: its own
# environment, as a service project's would be.
SERVICE_VENV := .venv-service
SERVICE_STAMP := $(SERVICE_VENV)/.installed-stamp

$(SERVICE_STAMP): tests/interop/service-requirements.txt
	$(PYTHON) -m venv $(SERVICE_VENV)
	$(SERVICE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVICE_VENV)/bin/python -m pip install --quiet -r tests/interop/service-requirements.txt
	touch $(SERVICE_STAMP)

# Microsoft's Node SDK (MQTT and AMQP transports) for the interop tests, pinned by the lock file.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-stamp

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "make test needs Node.js (18 or later) and npm for the Node SDK tests"; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

venv: $(STAMP) $(SDK_STAMP)

# Where PYTHONDONTWRITEBYTECODE is set (CI machines, containers), Python keeps no compiled copy of the
# package, so every hub process would compile it again at start: about 0.2 s of its start-up. Compile
# what changed since the last time, once, before anything starts a hub.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q edgehub_emu

# The modules every message runs through, compiled to C with mypyc: about a quarter less CPU per
# message. Instant when nothing changed; after an edit to one of them, about 45 s. It needs the C
# compiler and Python headers that the install needs anyway (pip builds the AMQP engine from source).
compiled: $(STAMP)
	@$(BIN)/python -m edgehub_emu.compiled.build --require

run: $(STAMP) $(SDK_STAMP) bytecode compiled
	$(BIN)/edgehub-emu run --manifest $(MANIFEST) $(if $(LOCAL_MODULES),--local-modules $(LOCAL_MODULES))

test: $(STAMP) $(SDK_STAMP) $(SERVICE_STAMP) $(NODE_STAMP) bytecode compiled mosquitto-check chromium-check
	$(BIN)/python -m pytest

# The bridge tests run a real mosquitto; .ci/run installs it, a laptop needs it once.
mosquitto-check:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  echo "make test needs mosquitto for the MQTT bridge tests: sudo apt-get install mosquitto"; exit 1; }

# The dashboard tests drive Debian's chromium with Playwright (no browser is downloaded).
chromium-check:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "make test needs chromium for the dashboard tests: sudo apt-get install chromium"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy


format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# amqtt's broker is a peer in the benchmark; it gets its own environment.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

$(BENCH_STAMP):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet amqtt==0.12.1
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP) bytecode compiled
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(SDK_VENV) $(SERVICE_VENV) $(BENCH_VENV) $(NODE_DIR)/node_modules .pytest_cache build *.egg-info \
	  edgehub_emu/compiled/lib
