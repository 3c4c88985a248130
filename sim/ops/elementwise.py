"""Placeholder: kernels of this family are added here."""
