"""Helpers the tests share that are not fixtures: stand-in servers and the like."""
