"""Adapters that plug the board into agent stacks (LangGraph, MCP, ...).

Each adapter lives in its own module and needs its own extra (``pip install
'quorumboard[langgraph]'``); this package imports nothing optional, so importing it never fails
on a lean install.
"""
