"""``/api/v1`` routes, one module per capability: catalogs, estimates, jobs, reports."""
