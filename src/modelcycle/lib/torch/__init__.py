"""Torch code shared by the PyTorch and Lightning plugins: networks (:mod:`.nets`), their
``model:`` options (:mod:`.config`), tensors/optimizer/evaluation (:mod:`.training`), the
``model.pth`` artifact and its serving handlers (:mod:`.artifact`) and the multi-host process
group (:mod:`.distributed`). Importing this package imports no torch; its modules do.
"""
