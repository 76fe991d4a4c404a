"""The PyTorch framework plugin (entry point ``pytorch`` in ``modelcycle.frameworks``)."""
