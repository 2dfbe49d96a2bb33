"""Root conftest: shared fixture plugins (pytest only honours pytest_plugins here)."""

pytest_plugins = ["tests.support.etcd_fixtures", "tests.support.triton_fixtures"]
