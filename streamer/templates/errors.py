"""The errors raised when a template cannot be found, compiled or rendered."""

from __future__ import annotations


class TemplateError(Exception):
    """A template that cannot be found, compiled or rendered; the message says where."""


class TemplateNotFoundError(TemplateError, LookupError):
    """No directory holds the template, or the chosen one lacks a required file."""
