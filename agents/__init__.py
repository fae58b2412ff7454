"""Agent teams on the blackboard (later issue)."""
