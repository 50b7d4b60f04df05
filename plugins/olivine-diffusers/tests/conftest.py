"""Fixtures of the diffusion LoRA tests: tiny pipelines and image folders, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 1.5-shaped pipeline folder."""
    from diffusers_tiny import sd15_pipeline

    return sd15_pipeline(tmp_path_factory.mktemp("sd15") / "pipe")


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL-shaped pipeline folder."""
    from diffusers_tiny import sdxl_pipeline

    return sdxl_pipeline(tmp_path_factory.mktemp("sdxl") / "pipe")


@pytest.fixture(scope="session")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Flux-shaped pipeline folder."""
    from diffusers_tiny import flux_pipeline

    return flux_pipeline(tmp_path_factory.mktemp("flux") / "pipe")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 32x32 PNGs of a red square on blue, each with a caption file."""
    from diffusers_tiny import shapes_folder

    return shapes_folder(tmp_path_factory.mktemp("shapes") / "images")
