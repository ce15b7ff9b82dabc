"""Unhidra's ML worker: anomaly scores for telemetry and abuse/spam scores for messages.

The server starts ``python -m unhidra_ml --connect <socket>``; see README.md for the
protocol and the models.
"""

__version__ = "0.1.0"
