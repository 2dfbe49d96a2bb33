"""Root conftest: shared fixture plugins (pytest only honours pytest_plugins here)."""

pytest_plugins = ["tests.support.etcd_fixtures"]
