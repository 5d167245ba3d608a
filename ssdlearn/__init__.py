"""ssdlearn: the tested reference library of the SSD course."""

__version__ = "0.1.0"
