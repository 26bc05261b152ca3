"""The Kaggle download and the reachability probe: offline in seconds, one line, never a real request."""

import sys
import time
import types

import pytest

from xraylib import download
from xraylib.download import fetch
from xraylib.errors import InputError


def test_fetch_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download.socket, "create_connection", unreachable)  # never a real request
    monkeypatch.setitem(sys.modules, "kagglehub", types.ModuleType("kagglehub"))
    start = time.monotonic()
    with pytest.raises(InputError, match="cannot reach www.kaggle.com") as err:
        fetch(tmp_path / "download")
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value)
    assert not (tmp_path / "download").exists()


def test_fetch_without_tools_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import fails
    monkeypatch.setattr(download.shutil, "which", lambda name: None)
    monkeypatch.setattr(download, "reachable", lambda *a, **k: pytest.fail("must not go online"))
    with pytest.raises(InputError, match="pip install kagglehub"):
        fetch(tmp_path / "download")


def test_fetch_returns_an_existing_dataset(synth_data, monkeypatch):
    monkeypatch.setattr(download, "reachable", lambda *a, **k: pytest.fail("must not go online"))
    assert fetch(synth_data) == synth_data
