"""Example third-party modelcycle plugins: the ``sklearn-digits`` dataset and the ``ledger``
governance backend (see the package README)."""

__version__ = "0.1.0"
