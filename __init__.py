"""Postroom: the mail backbone of a business application.

This file is the package `postroom` (setup.cfg maps the repository root onto it), and
`__all__` below is the public surface: what plugins and embedding applications may import.
Everything else (`postroom.core.*`, `postroom.plugins.*`, `postroom.cli`) is internal.
"""
__all__ = []
