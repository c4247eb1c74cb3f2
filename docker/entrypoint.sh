#!/usr/bin/env bash
# One entrypoint for every container of docker/docker-compose.yml, also used outside containers by the
# standalone-cluster test (tests/test_cluster.py), so what runs in the containers is what the tests run.
#
#   entrypoint.sh master            a Spark standalone master        (SPARK_MASTER_HOST, SPARK_MASTER_PORT,
#                                                                     SPARK_MASTER_WEBUI_PORT)
#   entrypoint.sh worker [URL]      a worker of the master at URL    (SPARK_MASTER_URL, SPARK_WORKER_CORES,
#                                                                     SPARK_WORKER_MEMORY, SPARK_WORKER_HOST,
#                                                                     SPARK_WORKER_WEBUI_PORT)
#   entrypoint.sh jupyter           JupyterLab on the notebooks      (NOTEBOOK_DIR, JUPYTER_PORT)
#   entrypoint.sh demo              demo data, validate and the batch job through spark-submit.sh on
#                                   SPARK_MASTER_URL, lake at LAKE_ROOT (PERSONS, default 2000)
#   entrypoint.sh <command...>      runs the command (e.g. bash, ./spark-submit.sh ...)
#
# Spark comes from $SPARK_HOME when set, else from the installed pyspark package.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] && python="${PYTHON:-$here/.venv/bin/python}"

spark_home() {
  if [ -n "${SPARK_HOME:-}" ]; then
    echo "$SPARK_HOME"
  else
    "$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
  fi
}

role="${1:-}"
[ $# -gt 0 ] && shift
case "$role" in
  master)
    exec "$(spark_home)/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "${SPARK_MASTER_HOST:-0.0.0.0}" \
      --port "${SPARK_MASTER_PORT:-7077}" \
      --webui-port "${SPARK_MASTER_WEBUI_PORT:-8080}" "$@"
    ;;
  worker)
    url="${1:-${SPARK_MASTER_URL:-spark://spark-master:7077}}"
    [ $# -gt 0 ] && shift
    args=(--cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-2g}"
          --webui-port "${SPARK_WORKER_WEBUI_PORT:-8081}")
    [ -n "${SPARK_WORKER_HOST:-}" ] && args+=(--host "$SPARK_WORKER_HOST")
    exec "$(spark_home)/bin/spark-class" org.apache.spark.deploy.worker.Worker "$url" "${args[@]}" "$@"
    ;;
  jupyter)
    exec "$python" -m jupyterlab --ip=0.0.0.0 --port="${JUPYTER_PORT:-8888}" --no-browser --allow-root \
      --notebook-dir="${NOTEBOOK_DIR:-$here/notebooks}" --IdentityProvider.token="${JUPYTER_TOKEN:-}" "$@"
    ;;
  demo)
    master="${SPARK_MASTER_URL:-spark://spark-master:7077}"
    lake="${LAKE_ROOT:-/lake}"
    cd "$here"
    ./spark-submit.sh --master "$master" jobs/demo_data.py --conf conf --lake-root "$lake" --persons "${PERSONS:-2000}"
    ./spark-submit.sh --master "$master" jobs/validate.py --conf conf --lake-root "$lake"
    exec ./spark-submit.sh --master "$master" jobs/run.py --conf conf --lake-root "$lake"
    ;;
  "")
    echo "usage: $0 master | worker [URL] | jupyter | demo | <command...>" >&2
    exit 2
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
