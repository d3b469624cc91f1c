"""One module per model family, as transformers keeps ``models/<family>/``: each lists in
``FAMILIES`` the model types it builds, each with the transformers configuration class its
config.json is read as (:class:`.config.ConfigClass`) and the builder of its
:class:`~estimator.spec.ArchSpec`. The shared parts: :mod:`.config` (the typed reader of
``config.json``), :mod:`.layers`, :mod:`.moe` and :mod:`.towers`. :mod:`estimator.arch` gathers the
registry.
"""
