"""A module ``WhereAmI`` names in ``preload``: a standby child imports it before its request."""

from __future__ import annotations

import os

#: the process that imported it
IMPORTED_IN = os.getpid()
