"""Submitted by the cluster test: where do the executors import audience_activation from?"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession


def where() -> str:
    import audience_activation

    return audience_activation.__file__ or ""


if __name__ == "__main__":
    spark = SparkSession.builder.getOrCreate()
    paths = spark.sparkContext.parallelize(range(2), 2).map(lambda _: where()).distinct().collect()
    with open(sys.argv[1], "w") as out:
        out.write("\n".join(paths))
    spark.stop()
