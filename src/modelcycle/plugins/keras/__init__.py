"""The Keras 3 framework plugin (entry point ``keras`` in ``modelcycle.frameworks``).

TensorFlow is imported only when a hook of this package needs it (a use case selecting
``framework: keras`` trains or serves); its C++ log noise is turned down first
(``TF_CPP_MIN_LOG_LEVEL=2`` unless the environment already says otherwise).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
