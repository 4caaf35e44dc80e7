# Switchyard: `make run` and `make test` do everything on a fresh Debian 12 machine.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3
DEMO_DIR := $(BUILD_DIR)/demo
BENCH_MODELS := $(BUILD_DIR)/bench/models

.PHONY: all deps configure build demo run test bench format clean

all: build

deps:
	@tools/install_deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release; fi

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The demo model: a tiny deterministic Llama with a trained byte-level BPE tokenizer.
MODELGEN := tools/modelgen/make_model.py tools/modelgen/corpus.txt

demo: build $(DEMO_DIR)/model/config.json

$(DEMO_DIR)/model/config.json: $(MODELGEN)
	$(PYTHON) tools/modelgen/make_model.py --preset demo --dtype bf16 --out $(DEMO_DIR)/model

run: demo
	$(BUILD_DIR)/bin/switchyard-generate --model $(DEMO_DIR)/model --max_tokens 48

test: build
	cd $(BUILD_DIR) && ctest -j$(JOBS) --output-on-failure

$(BENCH_MODELS)/llama-0.5b-bf16/config.json:
	$(PYTHON) tools/modelgen/make_model.py --preset bench-0.5b --dtype bf16 --out $(BENCH_MODELS)/llama-0.5b-bf16
$(BENCH_MODELS)/llama-0.5b-f32/config.json:
	$(PYTHON) tools/modelgen/make_model.py --preset bench-0.5b --dtype f32 --out $(BENCH_MODELS)/llama-0.5b-f32

bench: build $(BENCH_MODELS)/llama-0.5b-bf16/config.json $(BENCH_MODELS)/llama-0.5b-f32/config.json
	$(BUILD_DIR)/bench/bench_engine --models $(BENCH_MODELS)/llama-0.5b-bf16,$(BENCH_MODELS)/llama-0.5b-f32
	$(BUILD_DIR)/bench/bench_engine --models $(BENCH_MODELS)/llama-0.5b-bf16 --precision bf16
	$(BUILD_DIR)/bench/bench_kernels --benchmark_min_time=0.2

format:
	git ls-files '*.cc' '*.h' '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
