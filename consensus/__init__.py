"""quorumboard: a replicated blackboard for teams of LLM agents (public API filled in by client/cluster)."""
