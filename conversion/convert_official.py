#!/usr/bin/env python
"""Convert the official PVT checkpoints into Hub repositories — the same code path as `pvt-hf convert`.

    python conversion/convert_official.py pvt_v2_b2.pth out/pvt-v2-b2
    python conversion/convert_official.py --all downloads/ out/ --push-to-hub my-org      # all 22 files at once

Every option of `pvt-hf convert --help` applies.
"""

import sys

from pvt_hf_cli import main


if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
