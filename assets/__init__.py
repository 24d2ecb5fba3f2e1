"""Package data shipped with mobilesd: the small trained digits model (tiny-digits-sd/), the default --model.

pyproject.toml installs this folder as ``mobilesd.assets``; code finds it with importlib.resources
(``mobilesd.tiny.model.DEFAULT_MODEL``), never by a path relative to the repository.
"""
