"""The write path: sources → records → encoder → store + index."""
