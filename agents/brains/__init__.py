"""What decides a reply: the simulated brain, the study-calibrated brains (their per-model
parameters in ``calibration/``, fitted by :mod:`.calibrate`) and the LLM brain speaking the
chat-completions API."""
