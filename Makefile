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

# Quickstart on the shipped mar-tiny model: export, then generate a 3 into out/three.png.
demo: $(VENV)/.installed
	$(BIN)/gtr-export --model mar-tiny -o out/mar-tiny-fp32.plan
	$(BIN)/gtr-run out/mar-tiny-fp32.plan --class 3 -o out/three.png
	$(BIN)/gtr-run out/mar-tiny-fp32.plan -c 0 -c 1 -c 2 -c 3 -c 4 -c 5 -c 6 -c 7 -c 8 -c 9 -n 8 --grid -o out/digits.png

clean:
	rm -rf $(VENV) out
