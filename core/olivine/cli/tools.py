"""Olive's tool commands in the host: ``shared-cache``, ``generate-model-package``, ``init``.

Each lives in its own module and is imported only when it runs (``--help`` needs only
the ``configure`` functions, which import nothing heavy).
"""

from __future__ import annotations

import argparse
from typing import Any


def _shared_cache(args: argparse.Namespace) -> int:
    from olivine.cli.sharedcache_cmd import cmd_shared_cache

    return cmd_shared_cache(args)


def _model_package(args: argparse.Namespace) -> int:
    from olivine.cli.modelpackage import cmd_generate_model_package

    return cmd_generate_model_package(args)


def _init(args: argparse.Namespace) -> int:
    from olivine.cli.init_wizard import cmd_init

    return cmd_init(args)


def add_tools(sub: Any) -> None:
    """Add the three commands to ``sub`` (an argparse sub-parsers object)."""
    from olivine.cli import init_wizard, modelpackage, sharedcache_cmd

    p = sub.add_parser("shared-cache", help="list or delete entries of a shared step cache",
                       description=(sharedcache_cmd.__doc__ or "").split("\n\n")[0])
    sharedcache_cmd.configure(p)
    p.set_defaults(handler=_shared_cache)
    p = sub.add_parser("generate-model-package",
                       help="merge output folders into an ONNX Runtime model package",
                       description=(modelpackage.__doc__ or "").split("\n\n")[0])
    modelpackage.configure(p)
    p.set_defaults(handler=_model_package)
    p = sub.add_parser("init", help="interactive wizard that writes an olivine (or Olive) command "
                                    "or workflow config",
                       description=(init_wizard.__doc__ or "").split("\n\n")[0])
    init_wizard.configure(p)
    p.set_defaults(handler=_init)
