"""videollm-online: an online video LLM that watches a stream frame by frame and talks while it watches."""

__version__ = "0.1.0"
