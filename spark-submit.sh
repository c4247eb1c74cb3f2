#!/usr/bin/env bash
# Submit a job of jobs/ to any Spark master, shipping the audience_activation package to the executors.
#
#   ./spark-submit.sh [spark-submit options...] jobs/<job>.py [job options...]
#
# Examples:
#   ./spark-submit.sh --master 'local[*]' jobs/validate.py --lake-root ./lake
#   ./spark-submit.sh --master spark://127.0.0.1:7077 jobs/demo_data.py --persons 100000 --lake-root /shared/lake
#   ./spark-submit.sh --master yarn --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/validate.py --lake-root s3a://b/lake
#
# Every option before the job script goes to spark-submit unchanged (--master, --conf k=v, --packages, ...).
# The Delta Lake Spark connector:
#   - given by the caller (--packages io.delta:... or a delta-spark jar in --jars): used as given;
#   - else the jars `make setup` fetched into jars/lib/ (or $AUDIENCE_ACTIVATION_JARS) are shipped with --jars,
#     so the driver and every executor load them (AUDIENCE_ACTIVATION_JARS=none ships none: delta-rs only).
# Either way the Delta SQL extension and catalog are enabled, and `storage.engine: auto` picks delta-spark.
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
delta=0
if [[ " ${spark_args[*]:-} " == *"io.delta:"* || " ${spark_args[*]:-} " == *"delta-spark_"* ]]; then
  delta=1  # the caller chose the connector (--packages io.delta:... or its jar in --jars)
else
  jars_dir="${AUDIENCE_ACTIVATION_JARS:-$here/jars/lib}"
  if [ "$jars_dir" != "none" ] && [ -f "$jars_dir/.complete" ]; then
    shipped="$(sed "s|^|$jars_dir/|" "$jars_dir/.complete" | paste -sd, -)"
    # Merge with jars the caller passed: spark-submit keeps only the last --jars.
    for i in "${!spark_args[@]}"; do
      if [ "${spark_args[$i]}" = "--jars" ] && [ $((i + 1)) -lt ${#spark_args[@]} ]; then
        shipped="${spark_args[$((i + 1))]},$shipped"
        unset 'spark_args[i]' 'spark_args[i+1]'
      fi
    done
    spark_args=(${spark_args[@]+"${spark_args[@]}"})
    extra+=(--jars "$shipped")
    delta=1
  else
    echo "spark-submit.sh: no Delta Lake Spark jars in $jars_dir (run \`make jars\`); storage.engine: auto will use delta-rs" >&2
  fi
fi
if [ "$delta" = 1 ]; then
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
