"""ssdlearn: the tested reference library of the SSD course.

Each module names the lesson that builds it; the README maps lessons to modules.
"""

__version__ = "0.1.0"
