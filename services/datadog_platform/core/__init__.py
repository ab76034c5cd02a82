"""Shared runtime of the three services: errors, logging, server factory, Arrow framing."""
