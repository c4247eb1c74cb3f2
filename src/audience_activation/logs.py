"""Spark's own (log4j) loggers, set from Python through the JVM gateway for a while, then set back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


def quiet_jvm_loggers(jvm: Any, names: Iterable[str], level: str = "ERROR") -> Callable[[], None]:
    """Set the log4j loggers ``names`` to ``level``; returns what undoes it.

    The undo gives a logger that had a setting of its own its level back, and removes the setting added to one
    that had none, so that it inherits its parents' level again (a later ``sc.setLogLevel`` reaches it). Best
    effort: without a JVM gateway, or when log4j refuses, the levels stay as they are (logged at debug level).

    Example:
        >>> restore = quiet_jvm_loggers(spark.sparkContext._jvm, ["org.apache.spark.rdd.MapPartitionsRDD"])
        >>> ...  # work whose warnings are expected
        >>> restore()
    """
    changed: list[tuple[str, bool, Any]] = []
    try:
        log4j = jvm.org.apache.logging.log4j
        context = log4j.core.LoggerContext.getContext(False)
        configuration = context.getConfiguration()
        for name in sorted(set(names)):
            own = bool(configuration.getLoggers().containsKey(name))
            previous = configuration.getLoggerConfig(name).getLevel() if own else None
            log4j.core.config.Configurator.setLevel(name, getattr(log4j.Level, level))
            changed.append((name, own, previous))
    except Exception as exc:  # noqa: BLE001 - logging settings never fail a run
        log.debug("could not set Spark's log levels: %s", exc)

    def restore() -> None:
        try:
            for name, own, previous in reversed(changed):
                if own:
                    log4j.core.config.Configurator.setLevel(name, previous)
                else:
                    configuration.removeLogger(name)
            if changed:
                context.updateLoggers()
        except Exception as exc:  # noqa: BLE001 - logging settings never fail a run
            log.debug("could not set Spark's log levels back: %s", exc)
        changed.clear()

    return restore
