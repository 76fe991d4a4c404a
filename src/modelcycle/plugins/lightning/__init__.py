"""The Lightning framework plugin (entry point ``lightning`` in ``modelcycle.frameworks``).

It trains the torch library's networks (shared with the PyTorch plugin) with a
:class:`lightning.Trainer` and produces exactly the PyTorch plugin's artifact (a ``state_dict``
in ``model.pth``), so serving is identical.
"""
