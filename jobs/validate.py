"""spark-submit entry point: validate the configuration and the input table schemas (writes nothing).

./spark-submit.sh --master yarn jobs/validate.py --conf conf --lake-root s3a://bucket/lake
"""

from __future__ import annotations

import sys

from audience_activation.cli import cli

if __name__ == "__main__":
    cli(args=["validate", *sys.argv[1:]], prog_name="jobs/validate.py")
