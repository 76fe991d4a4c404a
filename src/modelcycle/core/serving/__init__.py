"""Serving: request codecs, the inference pipeline and the ASGI endpoint app."""
