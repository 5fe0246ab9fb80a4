"""Secrets stay out of output and logs: a database password is never printed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_the_demo_does_not_print_the_database_password(database_url):
    with_password = make_url(database_url).set(password="s3cret-Pa55").render_as_string(hide_password=False)
    assert "s3cret-Pa55" in with_password  # trust auth ignores it; the demo must still hide it
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--database", with_password],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "postgresql" in result.stdout
    assert "s3cret-Pa55" not in result.stdout + result.stderr
