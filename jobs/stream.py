"""spark-submit entry point: the streaming job (micro-batches over the input tables' new commits).

    ./spark-submit.sh --master spark://host:7077 jobs/stream.py --lake-root /shared/lake \\
        --trigger "30 seconds"
"""

from __future__ import annotations

import sys

from audience_activation.cli import cli

if __name__ == "__main__":
    cli(args=["stream", *sys.argv[1:]], prog_name="jobs/stream.py")
