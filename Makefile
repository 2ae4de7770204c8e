# The two quick-start commands are `make run` and `make test`; both install first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Builtin plugins `make run` enables before serving.
PLUGINS ?= mail_queue auto_vacuum mail_marketing inbound

.PHONY: install run test test-fast screenshots bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/postroom init
	@for p in $(PLUGINS); do $(BIN)/postroom plugins enable $$p || exit 1; done
	$(BIN)/postroom serve

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not heavy"

# The console's pictures in docs/console/ (the README shows two), taken by its browser tests.
screenshots: install
	POSTROOM_SCREENSHOTS_DIR=docs/console $(BIN)/pytest -q tests/console/test_browser.py

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
