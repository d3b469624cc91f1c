"""Hugging Face Hub ids: a model named ``org/name[@revision]`` resolved to its ``config.json`` and
its safetensors headers (tensor names, shapes and dtypes; no weights downloaded), stored with the
commit it came from, and handed to the estimator as a config dict: the estimator never touches
the network."""
