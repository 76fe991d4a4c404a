"""Code shared by modelcycle's framework plugins, with no entry point of its own.

Framework plugins import neither each other nor a platform; what two of them share (the torch
networks, tensors, optimizer and serving handlers of the PyTorch and Lightning plugins, the
packaged example configs) lives here and is imported by each.
"""
