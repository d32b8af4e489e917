"""pairless: zero-shot modality translation with 4M-style any-to-any models on fragmented data."""

__version__ = "0.1.0"
