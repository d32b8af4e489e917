"""Helpers every layer may use: crash-safe storage (:mod:`.storage`), thread counts (:mod:`.threads`)."""
