"""valign-ray: align language models to values collected from a representative public sample.

Importing this package imports nothing heavy: Ray, torch and DeepSpeed load where they are used.
"""

__version__ = "0.1.0"
