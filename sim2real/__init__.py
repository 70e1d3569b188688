"""sim2real: close the sim-to-real domain gap for driving perception, as a Prefect batch pipeline.

The code lives in the top-level folders fixed by the design (``storage/``, ``models/``, ``tasks/``,
``flows/``); ``pyproject.toml`` maps each of them into this package, so they import as
``sim2real.storage``, ``sim2real.models``, ``sim2real.tasks`` and ``sim2real.flows``.
"""

__version__ = "0.1.0"
