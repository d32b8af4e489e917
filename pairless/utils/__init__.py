"""Helpers every layer may use: crash-safe storage (:mod:`.storage`) and CPU thread counts (:mod:`.threads`)."""
