"""Modules run against moto in-process: the functional tier's ``aws`` and ``deployed``."""

from tests.functional.conftest import aws, deployed  # noqa: F401 - fixtures, registered by import
