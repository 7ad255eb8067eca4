"""Without the real data the suite fails, and says how to get it."""

from __future__ import annotations

import pytest

from tests.conftest import require_data


def test_missing_data_fails_with_the_download_instruction(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        require_data(tmp_path / "amibr" / "AMI-BR.csv", "real AMi-Br data")
    message = str(failed.value)
    assert str(tmp_path / "amibr") in message
    assert "mitotype data download amibr" in message and "MITOTYPE_SHARED_DATA" in message


def test_present_data_is_returned(amibr_root):
    assert (amibr_root / "AMI-BR.csv").is_file()
