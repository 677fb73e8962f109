# The README's commands. `make demo` = set up everything + run the CPU demo; `make test` = the suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup data demo test test-fast report clean gpu-wheels

$(BIN)/alexlab-train: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	@touch $@

setup: $(BIN)/alexlab-train data

# Fashion-MNIST: Debian's package where apt and root are available; otherwise the demo's
# first run downloads it through torchvision into data/fashion_mnist.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt failed: torchvision will download Fashion-MNIST"; \
	else echo "no apt/root: torchvision will download Fashion-MNIST into data/"; fi

demo: setup
	bash scripts/demo.sh

# Tests in parallel, one worker per core up to 4: most of a test's time is a fresh `alexlab-train`
# process importing torch, torchvision and Lightning (~6 s of one core here), so workers scale with cores.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: setup
	$(BIN)/pytest -q -n $(TEST_JOBS) tests --nbmake notebooks

test-fast: setup
	$(BIN)/pytest -q -n $(TEST_JOBS) -m "not slow" tests

# What the device machine's image lacks (it has torch, Lightning, torchmetrics, torchvision), as
# wheels of the versions installed here, to carry there: scripts/gpu_checks.sh installs them offline.
GPU_WHEELS := hydra-core omegaconf antlr4-python3-runtime hydra-submitit-launcher submitit cloudpickle \
	rich markdown-it-py mdurl pygments
gpu-wheels: $(BIN)/alexlab-train
	rm -rf .whl
	$(BIN)/pip freeze | grep -i -E "^($$(echo $(GPU_WHEELS) | tr ' ' '|'))==" > .gpu-wheels.txt
	$(BIN)/pip wheel -q --no-deps -w .whl -r .gpu-wheels.txt
	rm .gpu-wheels.txt

clean:
	rm -rf runs multirun outputs
