"""IBM platform adapters: the AI Factsheets governance backend (``ibm-aigov-facts-client``) and
the Watson OpenScale monitoring backend (``ibm-watson-openscale``, imported when first used).

Install with ``pip install 'modelcycle[ibm]'``. Nothing here imports the IBM clients at import
time: the facts client runs in a child process (:mod:`modelcycle.platforms.ibm.worker`).
"""
