"""Serving: request codecs and the inference pipeline (the SageMaker handler contract). The local
endpoint's ASGI app lives with the local platform (:mod:`modelcycle.platforms.local.app`)."""
