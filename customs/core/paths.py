"""Where the project's own files are (reference data, templates, samples, prefect.yaml)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = PROJECT_ROOT / "reference"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
LOCALE_DIR = PROJECT_ROOT / "locale"  # gettext catalogues (.po) of the reasons' messages, read by Babel
SAMPLES_DIR = PROJECT_ROOT / "samples"
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
