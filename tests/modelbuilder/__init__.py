"""Tests of the olivine-modelbuilder plugin."""
