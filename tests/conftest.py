"""Shared fixtures live in plugin modules, one per concern."""

pytest_plugins = ["tests.fixtures_http", "tests.fixtures_store", "tests.fixtures_notify"]
