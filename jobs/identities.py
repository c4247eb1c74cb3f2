"""spark-submit entry point: resolve identities as of T (writes identity_clusters and quarantine rows).

    ./spark-submit.sh --master spark://host:7077 jobs/identities.py \
        --lake-root /shared/lake --evaluation-time 2026-11-29T00:00:00Z
"""

from __future__ import annotations

import sys

from audience_activation.cli import cli

if __name__ == "__main__":
    cli(args=["identities", *sys.argv[1:]], prog_name="jobs/identities.py")
