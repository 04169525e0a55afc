"""Environments for multi-turn agents (ALFWorld first). Importing this package imports nothing
heavy; each environment's dependencies are loaded by its own subpackage."""
