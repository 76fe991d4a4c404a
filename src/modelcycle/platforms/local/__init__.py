"""The local platform: in-process training and endpoints as detached uvicorn processes."""
