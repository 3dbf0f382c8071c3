"""Probabilistic models written as Pyro programs."""

from probgen.models.bnn import BNN

__all__ = ["BNN"]
