# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`python -m pvt_hf_cli ...`, the same as `pvt-hf ...`."""

import sys

from . import main


sys.exit(main())
