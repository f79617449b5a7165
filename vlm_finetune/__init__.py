"""Placeholder: this stage is built in a later issue."""
