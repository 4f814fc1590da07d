.PHONY: run run-node test install lint docs docs-serve down

# Start the local control plane with the CRD and examples applied.
run:
	bash scripts/run.sh

# The same demo in the cluster: a real node, the image built here, the Helm chart (as root).
run-node:
	bash scripts/run.sh --node

# Install everything (venv, pip, Go builds) and run all checks and tests.
test:
	bash scripts/test.sh

install:
	bash scripts/install.sh

lint:
	.venv/bin/ruff check operator tests bench && .venv/bin/ruff format --check operator tests bench && .venv/bin/mypy operator/svcreg && .venv/bin/lint-imports

# The documentation site (MkDocs, Material theme), built strictly: a broken link fails.
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

docs-serve:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve

down:
	.venv/bin/svcreg cluster down
