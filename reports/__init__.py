"""The shipped measurements (``data/*.jsonl``): CPU validation runs and meta-device simulations,
package data read through ``importlib.resources``."""
