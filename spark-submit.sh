#!/usr/bin/env bash
# Submit a job of jobs/ to any Spark master, shipping the audience_activation package to the executors.
#
#   ./spark-submit.sh [spark-submit options...] jobs/<job>.py [job options...]
#
# Examples:
#   ./spark-submit.sh --master 'local[*]' jobs/validate.py --lake-root ./lake
#   ./spark-submit.sh --master spark://127.0.0.1:7077 jobs/demo_data.py --persons 100000 --lake-root /shared/lake
#   ./spark-submit.sh --master yarn --packages io.delta:delta-spark_4.2_2.13:4.4.1 jobs/validate.py --lake-root s3a://b/lake
#
# Every option before the job script goes to spark-submit unchanged (--master, --conf k=v, --packages, ...).
# With the Delta jars requested (--packages io.delta:...), the Delta SQL extension is enabled too.
# SPARK_SUBMIT picks the spark-submit binary (default: $SPARK_HOME/bin/spark-submit, else pyspark's own).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(command -v python3)}"
[ -x "$here/.venv/bin/python" ] && python="${PYTHON:-$here/.venv/bin/python}"

spark_args=()
while [ $# -gt 0 ] && [[ "$1" != *.py ]]; do
  spark_args+=("$1")
  shift
done
if [ $# -eq 0 ]; then
  echo "usage: $0 [spark-submit options...] jobs/<job>.py [job options...]" >&2
  exit 2
fi
job="$1"
shift

# The package as a zip for --py-files: executors import the same code as the driver.
mkdir -p "$here/build"
archive="$here/build/audience_activation.zip"
"$python" - "$here/src" "$archive" <<'PY'
import pathlib, sys, zipfile
src, archive = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in sorted((src / "audience_activation").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            zf.write(path, path.relative_to(src))
PY

extra=()
if [[ " ${spark_args[*]:-} " == *"io.delta:"* ]]; then
  extra+=(--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
          --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)
fi

if [ -z "${SPARK_SUBMIT:-}" ]; then
  if [ -n "${SPARK_HOME:-}" ]; then
    SPARK_SUBMIT="$SPARK_HOME/bin/spark-submit"
  else
    SPARK_SUBMIT="$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')"
  fi
fi

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$python}"
exec "$SPARK_SUBMIT" --py-files "$archive" ${spark_args[@]+"${spark_args[@]}"} ${extra[@]+"${extra[@]}"} "$job" "$@"
