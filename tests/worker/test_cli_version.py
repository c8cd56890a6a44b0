"""`disagg --version` prints the package version."""

from __future__ import annotations

import pytest
from disagg_worker import __version__
from disagg_worker.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"disagg {__version__}"
