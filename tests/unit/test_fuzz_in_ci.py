"""The fuzz tests cannot rot unseen (issue 25, part 9): `make fuzz` failed on main for a route added after its test
(/v1/health/ready), because nothing ran the fuzz tests in CI. `make test` (which .ci/run runs) now runs a short pass of
every one of them, and the test install brings what they need."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_test_runs_a_short_pass_of_every_fuzz_test_and_ci_runs_make_test():
    commands = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (fuzz,) = [line for line in commands.splitlines() if "pytest -m fuzz tests/fuzz" in line]
    assert "CUSTOMS_FUZZ_SCALE=0.1" in fuzz and "CUSTOMS_FUZZ_MIN_INPUTS=1000" in fuzz  # short, but never empty
    assert commands.index(fuzz) < commands.rindex("pytest")  # before the suite itself, whatever PYTEST_ARGS says
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_test_install_brings_what_the_fuzz_tests_import():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    test = {Requirement(r).name: Requirement(r) for r in extras["test"]}
    for wanted in extras["fuzz"]:
        requirement = Requirement(wanted)
        assert requirement.name in test and test[requirement.name].specifier == requirement.specifier, wanted
