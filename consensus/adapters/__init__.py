"""Adapters that put the board behind other agent stacks' interfaces (MCP, LangGraph).

Each adapter is a module of its own that needs its stack's package (an extra, e.g.
``pip install 'quorumboard[mcp]'`` or ``'quorumboard[langgraph]'``). This package itself imports
nothing, so the core install never loads an optional dependency: import the adapter you need.
"""
