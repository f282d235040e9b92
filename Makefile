# One command from a fresh clone to green tests: `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test install demo demo-glyphs clean

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .cache/site

install: $(VENV)/.installed

# The pinned CPU build of torch goes in first, so nothing pulls a multi-GB CUDA build. timm (for
# gtr-bench --official: the official MAR code, timed in tests/test_bench.py) goes in last, without its
# dependencies: they would replace the CPU torch, and torchvision, which timm imports but the MAR code never
# uses, is stood in for by gtr.bench.official. --no-deps also skips pip's dependency check, and a re-run
# removes timm first, so no install reports its missing torchvision. (gtr is the distribution's old name.)
# Ray is for tests/test_scale_ray.py (the scale extra); where it cannot be installed that test skips.
# PYTHONWARNINGS=ignore on the editable install hides setuptools' "Editable installation" banner, which
# warns about a folder named like the package in the working directory: here that folder is the package.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip uninstall --quiet -y gtr timm 2>/dev/null || true
	$(BIN)/pip install --quiet torch==2.13.0
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[dev]' huggingface_hub pyyaml
	$(BIN)/pip install --quiet 'ray>=2.9' || echo "note: Ray not installable here; tests/test_scale_ray.py will skip"
	$(BIN)/pip install --quiet --no-deps timm==0.9.12
	touch $@

# Quickstart: export the shipped mar-tiny with the GtR plan (default) and the mar-64 baseline, draw a 3,
# then all ten digits with each plan; gtr-run prints the time per image of each, side by side.
DIGITS := -c 0 -c 1 -c 2 -c 3 -c 4 -c 5 -c 6 -c 7 -c 8 -c 9 -n 8 --grid
demo: $(VENV)/.installed
	$(BIN)/gtr-export --model mar-tiny --plan gtr --plan mar-64 -o out/demo.plan
	$(BIN)/gtr-run out/demo.plan --class 3 -o out/three.png
	$(BIN)/gtr-run out/demo.plan --plan gtr $(DIGITS) -o out/digits.png
	$(BIN)/gtr-run out/demo.plan --plan mar-64 $(DIGITS) -o out/digits-mar64.png

# The same on mar-glyphs (16x16 token grid): the letter A, then all 26 letters with each plan.
LETTERS := $(foreach c,$(shell seq 0 25),-c $(c)) -n 4 --grid
demo-glyphs: $(VENV)/.installed
	$(BIN)/gtr-export --model mar-glyphs --plan gtr --plan mar-64 -o out/glyphs.plan
	$(BIN)/gtr-run out/glyphs.plan --class 0 -o out/letter-a.png
	$(BIN)/gtr-run out/glyphs.plan --plan gtr $(LETTERS) -o out/letters.png
	$(BIN)/gtr-run out/glyphs.plan --plan mar-64 $(LETTERS) -o out/letters-mar64.png

clean:
	rm -rf $(VENV) out
