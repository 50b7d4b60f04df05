"""Tests of the olivine-lora plugin."""
