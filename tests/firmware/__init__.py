"""Tests of the virtual meter firmware (accounting model, NVM, reports)."""
