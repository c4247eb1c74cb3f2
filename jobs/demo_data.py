"""spark-submit entry point: generate the demo input tables.

./spark-submit.sh --master spark://host:7077 jobs/demo_data.py --persons 1000000 --lake-root s3a://bucket/lake
"""

from __future__ import annotations

import sys

from audience_activation.cli import cli

if __name__ == "__main__":
    cli(args=["demo-data", *sys.argv[1:]], prog_name="jobs/demo_data.py")
