"""Audience and profile activation on PySpark and Delta Lake.

Modules, one per concept:

- :mod:`audience_activation.config`: typed configuration loaded from ``conf/`` YAML files.
- :mod:`audience_activation.session`: the Spark session factory.
- :mod:`audience_activation.storage`: Delta Lake tables through ``delta-spark`` or ``delta-rs``.
- :mod:`audience_activation.schemas`: the input table schemas and their validation.
- :mod:`audience_activation.demo_data`: the deterministic demo data generator.
"""

from __future__ import annotations

__version__ = "0.1.0"
