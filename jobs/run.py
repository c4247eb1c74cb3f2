"""spark-submit entry point: the batch job (identities, profiles, segments, membership, activation outputs).

    ./spark-submit.sh --master spark://host:7077 jobs/run.py --lake-root /shared/lake \\
        --evaluation-time 2026-11-29T00:00:00Z
"""

from __future__ import annotations

import sys

from audience_activation.cli import cli

if __name__ == "__main__":
    cli(args=["run", *sys.argv[1:]], prog_name="jobs/run.py")
