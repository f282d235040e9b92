# One command from a fresh clone to green tests: `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test install demo clean

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed

# The pinned CPU build of torch goes in first, so nothing pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Quickstart: export, then generate. Uses the shipped mar-tiny when its weights are in the package,
# else an untrained mar-test model (the pipeline runs end to end; the images are noise).
demo: $(VENV)/.installed
	@if [ -f gtr/assets/tiny/mar_tiny.safetensors ]; then \
	  $(BIN)/gtr-export --model mar-tiny --plan mar-64 --plan gtr -o out/demo.plan && \
	  $(BIN)/gtr-run out/demo.plan --class 3 -o out/three.png && \
	  $(BIN)/gtr-run out/demo.plan -c 0 -c 1 -c 2 -c 3 -c 4 -c 5 -c 6 -c 7 -c 8 -c 9 -n 8 --grid -o out/digits.png; \
	else \
	  echo "mar-tiny weights are not shipped yet: exporting an untrained mar-test model instead"; \
	  $(BIN)/gtr-export --model mar-test --random-weights --plan gtr --plan mar-16 -o out/demo.plan && \
	  $(BIN)/gtr-run out/demo.plan --class 3 -o out/three.png && \
	  $(BIN)/gtr-inspect out/demo.plan --no-plans; \
	fi

clean:
	rm -rf $(VENV) out
