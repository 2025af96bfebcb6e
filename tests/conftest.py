"""Suite-wide: pytest's own ``pytester`` runs the plugin tests (tests/test_pytest_plugin.py)."""

pytest_plugins = ["pytester"]
