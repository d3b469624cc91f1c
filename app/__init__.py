"""tunefit web service and command line."""
