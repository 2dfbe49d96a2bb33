"""The operator's admin console (issue 13): the page at ``/console``, its read endpoints under
``/admin/console/``, and the history of this replica's counters behind its charts."""

from controlplane.console.page import mount, running

__all__ = ["mount", "running"]
