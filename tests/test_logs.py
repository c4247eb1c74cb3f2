"""Spark's log4j loggers quieted for a while and set back exactly as they were."""

from __future__ import annotations

from pyspark.sql import SparkSession

from audience_activation.logs import quiet_jvm_loggers


def test_quieted_loggers_are_set_back_as_they_were(spark: SparkSession) -> None:
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j  # noqa: SLF001

    def setting(name: str) -> str | None:
        """The level set on ``name`` itself, or None when it inherits."""
        configuration = log4j.core.LoggerContext.getContext(False).getConfiguration()
        own = configuration.getLoggers().containsKey(name)
        return str(configuration.getLoggerConfig(name).getLevel()) if own else None

    inherits, own = "audience_activation.test.inherits", "audience_activation.test.own"
    log4j.core.config.Configurator.setLevel(own, log4j.Level.INFO)
    try:
        assert (setting(inherits), setting(own)) == (None, "INFO")
        restore = quiet_jvm_loggers(spark.sparkContext._jvm, [inherits, own, own], "OFF")  # noqa: SLF001
        assert (setting(inherits), setting(own)) == ("OFF", "OFF")
        assert not log4j.LogManager.getLogger(inherits).isErrorEnabled()
        restore()
        assert (setting(inherits), setting(own)) == (None, "INFO")
        restore()  # a second call changes nothing
        assert (setting(inherits), setting(own)) == (None, "INFO")
    finally:
        configuration = log4j.core.LoggerContext.getContext(False).getConfiguration()
        configuration.removeLogger(own)
        log4j.core.LoggerContext.getContext(False).updateLoggers()


def test_without_a_jvm_nothing_is_changed_and_nothing_fails() -> None:
    restore = quiet_jvm_loggers(None, ["org.apache.spark.rdd.MapPartitionsRDD"])
    restore()
