"""Parameter count and inference time of one registered model; see inpaintbench.report.efficiency.

    uv run python scripts/model_efficiency.py --arch ccsa --args '{"base": 16}' --size 128 --device cpu
"""
import sys

from inpaintbench.report.efficiency import main

if __name__ == "__main__":
    sys.exit(main())
