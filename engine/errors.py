"""Errors a user can act on: the CLI prints their message alone, without a traceback."""


class SeirError(Exception):
    pass
