"""Helpers shared by every test layer (tests/ is on pytest's pythonpath): `from helpers.x import y`."""
