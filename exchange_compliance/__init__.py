"""exchange-compliance: a pytest compliance suite for on-premises Microsoft Exchange."""

__version__ = "0.1.0"
