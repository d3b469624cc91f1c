"""Settings and shared plumbing of the web service."""
