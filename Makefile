# qlane: `make demo` runs the main job on the bundled MobileNet; `make test` runs every check,
# `make test-fast` the pure-Python ones.
# Both create .venv and install everything from PyPI on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
MODEL  := examples/mobilenet_v1_0.25_128_u8.tflite
INPUTS := examples/mobilenet_v1_0.25_128_u8.inputs.npz
OUT    := build/demo

.PHONY: all demo test test-deep test-fast lint bench bench-kernels bench-mlperf bench-memory fuzz-bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/qlane inspect $(MODEL)
	$(BIN)/qlane simulate $(MODEL) --inputs $(INPUTS) --output $(OUT)/outputs.npz --tensors $(OUT)/tensors.npz
	$(BIN)/qlane generate $(MODEL) --target cortex-m7 -o $(OUT)/cortex-m7 --name mobilenet --inputs $(INPUTS)
	$(MAKE) -s -C $(OUT)/cortex-m7 example
	$(OUT)/cortex-m7/mobilenet_example
	$(BIN)/qlane verify $(MODEL) --target cortex-m7 --inputs $(INPUTS) --samples 1 --isa
	$(BIN)/qlane estimate $(MODEL) --target cortex-m7

lint: $(STAMP)
	$(BIN)/ruff check .

# every tier but "deep" (tests/conftest.py): under 15 minutes on two cores from a cold cache
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not deep"

# the exhaustive sweeps: every sanitizer build, every schedule on every instruction set, the
# sibling chips of a kernel family (CI runs it after `make test`; about 15 minutes)
test-deep: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m deep

# the inner loop: pure-Python tests only (tier "fast", see tests/conftest.py), no C build
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m fast

bench: $(STAMP)
	$(BIN)/python bench/bench_simulator.py

bench-kernels: $(STAMP)
	$(BIN)/python bench/instructions_per_mac.py

# MLPerf Tiny int8 models: estimate vs the best published silicon (a few minutes)
bench-mlperf: $(STAMP)
	$(BIN)/python bench/mlperf_tiny.py

# arena and cycles per schedule beside the layer-by-layer bound and TFLite Micro's arena
bench-memory: $(STAMP)
	$(BIN)/python bench/memory_schedules.py

fuzz-bench: $(STAMP)
	$(BIN)/python bench/fuzz_importer.py --count 10000

clean:
	rm -rf $(VENV) build .pytest_cache
