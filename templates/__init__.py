"""The service's Jinja templates, package data read through ``importlib.resources``."""
