"""Versions: the distribution's and the plugin API's.

``API_VERSION`` changes its major number whenever a hook specification or one of the five interfaces changes
in a way that breaks existing plugins; plugins declare the range they support in ``MEDKIT_API``.
"""

__version__ = "0.1.0"
API_VERSION = "1.0"
