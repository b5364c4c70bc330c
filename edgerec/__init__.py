"""edgerec: on-device recommendation toolkit.

Building blocks live in the subpackages (``data``, ``models``, ``eval``, ``compress``);
each workflow (train a teacher, compress it, personalise, export) is one recipe in
``edgerec.recipes``; ``edgerec.export`` lowers models to ExecuTorch and Core ML.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
