"""Screens of the writers UI."""
