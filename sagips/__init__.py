"""SAGIPS: a scalable asynchronous generative inverse-problem solver (Lersch et al.)."""

__version__ = "0.1.0"
