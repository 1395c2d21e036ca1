"""Shared fixtures live in plugin modules, one per concern."""

import os

import pytest

pytest_plugins = ["tests.fixtures_http", "tests.fixtures_store", "tests.fixtures_notify"]


@pytest.fixture(autouse=True, scope="session")
def _cache_folder_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The commands' cache folder (`mirror.config_cache`) is the session's own, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
