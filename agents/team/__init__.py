"""A team at work on the board: the actions a reply may take, coordination modes, each agent's
view of the board, the runner that drives rounds or asynchronous replies (and the study's own
harness rules), task files and the event log every metric is recounted from."""
