"""Experiment configs: one ``configs/NAME.py`` per experiment with ``get_config(arg=None)``
(``arg`` picks a variant), built from the shared blocks of ``configs/common.py``.

Load one by path or module, with an optional variant: ``configs/translation.py:smoke`` or
``configs.translation:smoke`` (``attnjax.experiment.load_config``).
"""
